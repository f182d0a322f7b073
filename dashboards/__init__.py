"""Grafana dashboards as code (grafana-foundation-sdk); built out by the dashboards issue."""
