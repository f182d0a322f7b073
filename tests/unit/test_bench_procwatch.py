"""The benches' CPU accounting: a watched process started by another watched process (the bench starts
the worker it watches) is counted once, under its own name."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
BURN_S = 0.6
# Waits for a line, burns BURN_S of CPU, says so, then waits to be closed (still alive, still watched).
CHILD = f"""
import sys, time
sys.stdin.readline()
t0 = time.process_time()
while time.process_time() - t0 < {BURN_S}:
    pass
print("burnt", flush=True)
sys.stdin.readline()
"""


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_harness", ROOT / "bench" / "harness.py")
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = harness  # dataclasses look their module up while the class is built
    spec.loader.exec_module(harness)
    return harness


def _used_while_a_child_burns(watch_child: bool, child_counts_for: str | None = None,
                              parent: str = "bench") -> dict[str, float]:
    """CPU-seconds per watched name while a child of this process burns BURN_S."""
    harness = _harness()
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        watch = harness.ProcWatch()
        watch.add(parent, os.getpid())
        if watch_child:
            watch.add("worker", child.pid)
        if child_counts_for is not None:
            watch.also(child_counts_for, child.pid)
        before = watch.cpu()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "burnt"
        after = watch.cpu()
        assert watch.rss_mb()[parent] > 0
        return {k: after[k] - before[k] for k in after}
    finally:
        child.kill()
        child.wait()


def test_a_watched_child_is_not_counted_again_in_its_watched_parent() -> None:
    used = _used_while_a_child_burns(watch_child=True)
    assert used["worker"] >= BURN_S * 0.9
    # This process only waited on a pipe meanwhile; with the child counted twice it would show BURN_S.
    assert used["bench"] < BURN_S / 3, used


def test_an_unwatched_child_still_counts_for_its_parent() -> None:
    used = _used_while_a_child_burns(watch_child=False)
    assert used["bench"] >= BURN_S * 0.9  # a load generator the bench forked is the bench's own work


def test_a_process_counted_for_another_name_leaves_the_tree_it_sits_in() -> None:
    """The bench's poller is a PostgreSQL backend, a child of the postmaster: its CPU is the bench's."""
    used = _used_while_a_child_burns(watch_child=False, child_counts_for="bench", parent="postgres")
    assert used["bench"] >= BURN_S * 0.9
    assert used["postgres"] < BURN_S / 3, used
