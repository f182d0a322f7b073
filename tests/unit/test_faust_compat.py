"""The Faust internals the worker relies on are still there, and the gap-commit fix holds."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from intervaltree import IntervalTree

from streams import faust_compat


def _consumer_state(committed: int) -> Any:
    tp = ("ioc.readings", 0)
    me = SimpleNamespace(
        _gap=defaultdict(IntervalTree), _acked=defaultdict(list), _acked_index=defaultdict(set),
        _committed_offset=defaultdict(lambda: None),
    )
    me._committed_offset[tp] = committed
    return me, tp


def test_the_internals_are_where_we_expect_them() -> None:
    faust_compat.check_internals()


def test_faust_commits_across_a_gap_it_never_delivered_unless_disabled() -> None:
    """What lost readings in issue 7: a stale prefetched record at offset 31 after a seek to 22.

    Faust's drain loop records 23..30 as a gap, and the next commit moves past them although no
    agent ever saw them. With gap tracking off, nothing is committed until 22.. are acked."""
    original = faust_compat._ORIGINAL_ADD_GAP or Consumer._add_gap
    me, tp = _consumer_state(committed=22)
    asyncio.run(original(me, tp, 23, 30))
    me._acked[tp].append(31)
    assert Consumer._new_offset(me, tp) == 32  # the faulty commit: 22..30 skipped

    faust_compat.disable_gap_commits()
    me, tp = _consumer_state(committed=22)
    asyncio.run(Consumer._add_gap(me, tp, 23, 30))
    me._acked[tp].append(31)
    assert Consumer._new_offset(me, tp) is None
    me._acked[tp].extend([22, 23])
    assert Consumer._new_offset(me, tp) == 24  # commits advance only over acked records


def test_a_range_the_broker_deleted_can_still_be_committed_past() -> None:
    faust_compat.disable_gap_commits()
    me, tp = _consumer_state(committed=10)
    asyncio.run(faust_compat.commit_lost_range(me, tp, 11, 19))
    me._acked[tp].extend([10, 20])
    assert Consumer._new_offset(me, tp) == 21
