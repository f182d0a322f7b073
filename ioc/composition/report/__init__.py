"""Incident reports: one self-contained HTML page (PNG charts inlined) about an event window.

Emergency staff send it up after a flood; engineers read it after a replay. The data comes from
``ioc.storage.report_queries`` (read-only); this package only computes derived series (VN_AQI
through ``detectors.vn_aqi``) and renders. It sits beside ``dashboards``: it may import the
detectors and the foundation, never the streams or the simulator.

Modules: ``times`` (windows), ``i18n`` (words and formats), ``aqi`` (VN_AQI series),
``charts`` (PNG), ``html`` (the page), ``build`` (assembly). Nothing is imported here, so the
CLI can parse options without loading matplotlib.
"""

from __future__ import annotations
