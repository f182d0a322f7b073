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
    res = subprocess.run([sys.executable, "-m", "ioc.cli", "score", "--e2e", "--scenario", "demo", "--seconds", "30",
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
