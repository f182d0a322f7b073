"""`ioc score --e2e`: the demo flood replayed through the real pipeline agrees with the in-process
run finding by finding, and the pipeline's flood alerts form one incident per river that climbs
BĐ I → II → III."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import stack_env

pytestmark = pytest.mark.integration


def test_e2e_replay_agrees_with_in_process_and_groups_the_flood_per_river(stack: Any, tmp_path: Path) -> None:
    env = stack_env(stack, IOC_DATA_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "ioc.composition.cli", "score", "--e2e", "--scenario", "demo", "--seconds", "30",
                          "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:] + res.stdout[-3000:]
    (out,) = json.loads(res.stdout)
    assert out["agreement"]["agree"], out["agreement"]
    assert out["agreement"]["matched"] > 20
    assert out["published"] == out["stored"] + out["deadlettered"]
    # Scores equal in both modes (same findings, same matching).
    for kind, e2e in out["e2e"]["kinds"].items():
        inproc = out["in_process"]["kinds"][kind]
        assert (e2e["tp"], e2e["fp"], e2e["detected"]) == (inproc["tp"], inproc["fp"], inproc["detected"]), kind
    floods = [i for i in out["incidents"] if i["kind"] == "flood"]
    cai = [i for i in floods if "HYD_DONG_TRANG" in i["members"]]
    assert len(cai) == 1, floods  # one incident for the river, whatever its gauges and detectors did
    steps = cai[0]["timeline"]
    assert steps.index("opened") < steps.index("escalated warning") < steps.index("escalated critical"), steps
    assert cai[0]["peak"] == "critical"
    assert "HYD_DIEN_PHU" in cai[0]["members"]


def test_a_worker_sigkilled_mid_flood_misses_no_finding_and_duplicates_none(stack: Any, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker dies (SIGKILL) in the middle of the demo flood and is restarted at once: its detector
    state comes back from the changelog checkpoint plus the readings replayed after it, so every
    in-process finding is there, no other finding comes twice, and no alert transition happens twice."""
    import signal
    import time

    from ioc.composition.score_e2e import run_e2e
    from ioc.stack.children import ChildProcesses

    for k, v in stack_env(stack, IOC_DATA_DIR=str(tmp_path)).items():
        if k.startswith("IOC_"):
            monkeypatch.setenv(k, v)
    killed: list[float] = []

    def kill_and_restart(procs: ChildProcesses) -> None:
        time.sleep(36)  # about 40 % into the 90 s replay: the flood is rising
        procs.kill("worker", signal.SIGKILL)
        killed.append(time.monotonic())
        procs.start("worker", "worker")

    res = run_e2e("demo", seconds=90, during=kill_and_restart)
    assert killed, "the fault never ran"
    a = res.agreement
    assert not a.only_inprocess, a.only_inprocess[:20]  # no finding missed
    # No hazard, anomaly or other health finding twice or out of nowhere. Known and open (issue 12):
    # while the restarted worker reads its backlog, a sensor can be judged silent for a moment
    # (2 of 4 runs); those raise-and-clear pairs are the only extra findings allowed here.
    extra = [x for x in a.only_e2e if " sensor_silent " not in x]
    assert not extra, extra[:20]
    assert res.published == res.stored + res.deadlettered
    flood = [i for i in res.incidents if i.kind == "flood"]
    assert flood and all(len(i.events) == len({(e[1], str(e[2].get("to") or e[2].get("severity")), str(e[2].get("ts")))
                                                 for e in i.events}) for i in flood), flood
