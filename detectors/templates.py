"""A new sensor's detectors as copies of a validated template, not built and validated afresh.

A city brings tens of thousands of sensors online at once: a worker's first start, a takeover,
a load test at 70,000 sensors. Sensors of one kind, metric set, interval, alarm levels and extras
get the same detectors but for their id and label, and building them validates the same family
parameters every time (about 100 µs a sensor, four times the cost of a reading). A template is
built once per parameter set and never fed; a sensor gets shallow copies with its own id and
label, and ``reset()`` gives each copy state containers of its own. The configuration a copy
shares with its template (limits, scales, thresholds) is read-only once constructed; the
conformance suite feeds copies side by side to hold every detector to that.

>>> from detectors.silence import SilenceDetector
>>> t = DetectorTemplates(max_templates=2)
>>> a = t.copies(("silence", 10.0), "S1", None, lambda: [SilenceDetector("tmpl", 10.0)])
>>> b = t.copies(("silence", 10.0), "S2", None, lambda: [SilenceDetector("tmpl", 10.0)])
>>> (a[0].sensor_id, b[0].sensor_id, t.built)
('S1', 'S2', 1)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import Any

from detectors.common import label_of


def fresh_copy(template: Any, sensor_id: str, name: str | None) -> Any:
    """``template`` as a fresh detector of another sensor: same configuration, state of its own."""
    cls = type(template)
    if hasattr(cls, "__copy__"):  # a detector that owns sub-objects copies them itself
        det = copy.copy(template)
    else:  # what copy.copy does for a plain object, without its generic reduce protocol (half the cost)
        det = object.__new__(cls)
        det.__dict__.update(template.__dict__)
    det.sensor_id = sensor_id
    if hasattr(det, "label"):
        det.label = label_of(sensor_id, name)
    det.reset()
    return det


class DetectorTemplates:
    """Templates by parameter set, bounded: a registry of unique parameters per sensor (every
    gauge has its own alarm levels) would otherwise keep one template per sensor for ever."""

    def __init__(self, max_templates: int = 4096) -> None:
        self.max_templates = max_templates
        self._by_key: dict[Hashable, list[Any]] = {}
        self.built = 0  # templates built: each one validated its parameters once

    def copies(self, key: Hashable, sensor_id: str, name: str | None, build: Callable[[], list[Any]]) -> list[Any]:
        """Fresh detectors for ``sensor_id``; ``build`` makes the template of ``key`` on a miss."""
        template = self._by_key.get(key)
        if template is None:
            if len(self._by_key) >= self.max_templates:
                self._by_key.clear()  # a rare full rebuild beats an LRU's per-call bookkeeping
            template = self._by_key[key] = build()
            self.built += 1
        return [fresh_copy(d, sensor_id, name) for d in template]
