"""The Grafana wall as code (grafana-foundation-sdk): ``main`` composes, ``common`` holds defaults.

One module per area (overview, traffic, air_noise, flood, health) returns its dashboard, built
from the panel shapes in ``panels`` (SQL header, wall time series, tables, stat tiles, maps); ``aqi``
generates the VN_AQI SQL, ``macros`` expands Grafana's macros, ``check`` runs every panel's SQL and
``push`` sends the wall to Grafana.
"""
