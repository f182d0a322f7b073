"""Keeps the worker's long-lived detector objects out of the garbage collector's full passes.

Each sensor's detectors are a few dozen small containers that live as long as the worker. CPython's
full (generation 2) collection walks every tracked object, so with 10,000 sensors each pass held the
event loop for 50-200 ms, growing with every sensor built: the alert path's worst stalls. Objects
moved to the permanent generation (``gc.freeze``) are still freed by reference counting; only cycles
among them are no longer looked for, and detector state makes none.
"""

from __future__ import annotations

import gc


class LongLivedHeap:
    """Freezes the heap once ``every`` more sensors were built since the last freeze.

    Freezing is cheap (a list splice), but it also freezes whatever short-lived garbage exists at that
    moment, so it is done per few hundred sensors built (bounded by the sensors a worker ever builds),
    never per envelope.
    """

    def __init__(self, every: int = 256) -> None:
        if every < 1:
            raise ValueError("every must be >= 1")
        self.every = every
        self._at = 0
        self.freezes = 0

    def freeze(self) -> None:
        gc.freeze()
        self.freezes += 1

    def note(self, built: int) -> bool:
        """``built``: sensors built so far (a running total). True when the heap was frozen."""
        if built - self._at < self.every:
            return False
        self._at = built
        self.freeze()
        return True
