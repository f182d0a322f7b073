"""The pipeline's rate with every detector on, against the same pipeline with detectors off.

Issue 8's target: the end-to-end rate with every detector on is at least 0.9 × the rate with
them off, in the same run. Runs ``bench_pipeline.py --mode burst`` alternately with
``IOC_DETECTORS_ENABLED=false`` and ``true`` (off, on, off, on, ...), so drift in the machine's
load hits both alike, and prints each run's end-to-end rate and the ratio of the medians.

    .venv/bin/python bench/bench_detector_overhead.py [--n 40000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RATE = re.compile(r"end to end: first publish → all rows in readings\s*│\s*([\d,]+) readings/s")


def one_run(n: int, detectors: bool) -> float:
    env = dict(os.environ, IOC_DETECTORS_ENABLED="true" if detectors else "false")
    out = subprocess.run([sys.executable, str(HERE / "bench_pipeline.py"), "--mode", "burst", "--n", str(n)],
                         env=env, capture_output=True, text=True, timeout=1200)
    m = RATE.search(out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"bench_pipeline failed (rc {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return float(m.group(1).replace(",", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40_000, help="readings per burst")
    ap.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "detector_overhead.json")
    args = ap.parse_args()
    off: list[float] = []
    on: list[float] = []
    for i in range(args.rounds):
        off.append(one_run(args.n, False))
        print(f"round {i + 1}: detectors off {off[-1]:,.0f} readings/s", flush=True)
        on.append(one_run(args.n, True))
        print(f"round {i + 1}: detectors on  {on[-1]:,.0f} readings/s", flush=True)
    ratio = statistics.median(on) / statistics.median(off)
    print(f"median: off {statistics.median(off):,.0f}, on {statistics.median(on):,.0f} readings/s; "
          f"on / off = {ratio:.2f} (target >= 0.90)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "off": off, "on": on, "ratio": ratio}, indent=1) + "\n")


if __name__ == "__main__":
    main()
