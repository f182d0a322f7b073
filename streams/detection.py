"""Runs the per-sensor detectors over an envelope; state goes to the Faust table once per envelope."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from detectors.alarm_levels import AlarmLevelDetector
from ioc.models import Finding, Reading


class DetectorBank:
    """Builds detectors from the sensor registry and keeps them in memory between envelopes."""

    def __init__(self, alarm_levels: dict[str, dict[str, float | None]]) -> None:
        self.alarm_levels = alarm_levels
        self._live: dict[str, AlarmLevelDetector] = {}

    def update_registry(self, alarm_levels: dict[str, dict[str, float | None]]) -> None:
        """Adopt new or changed alarm levels; a changed gauge gets a fresh detector (state kept)."""
        for sensor_id, levels in alarm_levels.items():
            if self.alarm_levels.get(sensor_id) != levels:
                self._live.pop(sensor_id, None)
        self.alarm_levels = alarm_levels

    def _detector(self, sensor_id: str, table: MutableMapping[str, Any]) -> AlarmLevelDetector | None:
        det = self._live.get(sensor_id)
        if det is None:
            levels = self.alarm_levels.get(sensor_id)
            if not levels:
                return None
            det = AlarmLevelDetector(sensor_id, levels)
            state = table.get(f"{sensor_id}:{det.rule}")
            if state:
                det.from_state(state)
            self._live[sensor_id] = det
        return det

    def process(self, readings: list[Reading], table: MutableMapping[str, Any]) -> list[Finding]:
        """Feed readings in order; write each touched detector's state back once."""
        findings: list[Finding] = []
        touched: dict[str, AlarmLevelDetector] = {}
        for r in readings:
            det = self._detector(r.sensor_id, table)
            if det is None:
                continue
            findings.extend(det.update(r))
            touched[r.sensor_id] = det
        for sensor_id, det in touched.items():
            table[f"{sensor_id}:{det.rule}"] = det.to_state()  # reassign: reaches the changelog
        return findings
