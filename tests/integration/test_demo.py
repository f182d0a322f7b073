"""`ioc demo` end to end on its own stack: exact accounting, an alert, nothing left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ioc.stack.process import pid_alive

pytestmark = pytest.mark.integration


def test_demo_accounts_for_every_reading_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOC_")}
    env["IOC_DATA_DIR"] = str(tmp_path / "ioc")
    seen: list[int] = []
    proc = subprocess.Popen([sys.executable, "-m", "ioc.composition.cli", "demo", "--duration", "15"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = tmp_path / "ioc" / "stack" / "state.json"
    out_lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        out_lines.append(line)
        if state.exists() and not seen:
            seen.extend(s["pid"] for s in json.loads(state.read_text())["services"].values())
    rc = proc.wait(300)
    out = "".join(out_lines)
    assert rc == 0, out[-3000:]
    assert "OK: every published reading is stored or dead-lettered" in out
    summary = {line.split("│")[1].strip(): int(line.split("│")[2]) for line in out.splitlines()
               if line.count("│") == 3 and line.split("│")[2].strip().isdigit()}
    assert summary["readings published (broker-acked)"] == (
        summary["readings stored (distinct sensor, ts)"] + summary["dead-lettered"])
    assert summary["alerts raised"] >= 1
    # the demo's flash flood at Đồng Trăng passes BĐ III (11.0 m): its alert peaked at critical
    dong_trang = [line for line in out.splitlines() if "HYD_DONG_TRANG" in line and line.count("│") >= 7]
    assert dong_trang and dong_trang[0].split("│")[2].strip() == "critical", dong_trang
    assert seen and not any(pid_alive(p) for p in seen)
    assert not state.exists()
