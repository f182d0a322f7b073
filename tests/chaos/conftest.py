"""Chaos suite fixtures: a private stack to break, the flood, the fault-free reference, the results.

The whole set takes about 25 minutes on the 2-core machine, more than the ~8 minutes the default
``pytest`` run can spend on it, so a plain ``pytest`` runs the representative subset in
:data:`DEFAULT_SUBSET` and ``pytest -m chaos`` (or ``make chaos``) runs every fault. Each test
records its recovery figures; the session prints them as a table and writes
``tests/chaos/results.json`` (gitignored).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ioc.stack.stack import StackState, down, up
from tests.chaos.harness import ChaosRun, Flood, Outcome, build_flood

#: what a plain `pytest` runs: a process crash, a database outage and the broker crash
DEFAULT_SUBSET = frozenset({
    "test_worker_sigkill[at_once]",
    "test_postgres_stopped_for_60_s",
    # the broker comes back without its log (Tansu's memory storage): topics and ledger start again
    "test_tansu_sigkill[at_once]",
})
RESULTS: list[dict[str, Any]] = []
RESULTS_PATH = Path(__file__).with_name("results.json")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without `-m chaos`, keep only the subset of this directory's tests."""
    if "chaos" in (config.option.markexpr or ""):
        return
    here = Path(__file__).parent
    keep, drop = [], []
    for item in items:
        inside = here in Path(str(item.fspath)).parents
        (drop if inside and item.name not in DEFAULT_SUBSET else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("chaos: recovery per fault")
    head = f"{'fault':<44} {'outcome':<8} {'lost':>5} {'dup':>4} {'first row s':>11} {'caught up s':>11} {'probe s':>7}"
    tr.write_line(head)
    for r in RESULTS:
        def f(x: Any) -> str:
            return "-" if x is None else f"{x:.1f}" if isinstance(x, float) else str(x)

        tr.write_line(f"{r['fault']:<44} {r['outcome']:<8} {f(r.get('lost_rows')):>5} {f(r.get('duplicated')):>4}"
                      f" {f(r.get('first_row_s')):>11} {f(r.get('caught_up_s')):>11} {f(r.get('probe_s')):>7}")
    tr.write_line(f"(written to {RESULTS_PATH})")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if RESULTS:
        RESULTS_PATH.write_text(json.dumps(RESULTS, indent=2, default=str) + "\n")


@pytest.fixture(scope="session")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    """Mosquitto, Tansu and PostgreSQL of the chaos suite's own, whatever URLs the environment has:
    these tests kill them."""
    base = tmp_path_factory.mktemp("chaosstack")
    state = up(base, environ={})
    try:
        yield state
    finally:
        state.save()
        down(base)


@pytest.fixture(scope="session")
def flood() -> Flood:
    return build_flood()


@pytest.fixture(scope="session")
def reference(chaos_stack: StackState, flood: Flood, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """The same flood through a pipeline that nothing happens to: what every fault run must match."""
    run = ChaosRun(chaos_stack, flood, tmp_path_factory.mktemp("reference"))
    try:
        run.warm_up()
        run.stream()
        run.finish()
        out = run.outcome()
    finally:
        run.close()
    assert out.missing_rows == 0 and out.unexpected_rows == 0 and out.rollup_mismatches == 0, out
    assert out.findings is not None and out.findings.agree, out.findings.to_json()
    assert out.alerts, "the flood must raise alerts"
    assert not out.duplicate_transitions and not out.undelivered and not out.mqtt_unseen and not out.webhook_unseen
    return out


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_CALL_OUTCOME] = "xfailed" if hasattr(report, "wasxfail") else report.outcome


_CALL_OUTCOME = pytest.StashKey[str]()


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A row of the results table; the test fills it in, even when it fails."""
    row: dict[str, Any] = {}
    yield row
    if "fault" in row:
        row["outcome"] = request.node.stash.get(_CALL_OUTCOME, "error")
        RESULTS.append(row)
