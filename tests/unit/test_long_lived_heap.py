"""The worker's detector objects leave the garbage collector's full passes as sensors are built."""

from __future__ import annotations

import gc

import pytest

from streams.long_lived_heap import LongLivedHeap


@pytest.fixture(autouse=True)
def _unfrozen() -> None:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_heap_is_frozen_once_every_so_many_sensors_are_built() -> None:
    heap = LongLivedHeap(every=100)
    kept = [{"sensor": i} for i in range(1000)]  # tracked, long-lived objects
    assert gc.get_freeze_count() == 0
    assert not heap.note(99)
    assert gc.get_freeze_count() == 0
    assert heap.note(100)
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    assert not heap.note(150)  # 50 more since the last freeze
    assert heap.note(230)
    assert heap.freezes == 2
    assert gc.get_freeze_count() >= frozen


def test_every_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LongLivedHeap(every=0)
