"""Run every benchmark in sequence, printing each one's output as it comes.

Benches print figures and ratios and never assert timings, so the exit status is non-zero only
when a bench crashed (non-zero exit or killed by its timeout). Extra arguments are not passed on:
run a bench directly to scale it.

    .venv/bin/python bench/run_all.py [--only storage,ingest,detectors] [--timeout 900]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Cheap, CPU-only benches first, so a broken stack does not hide their figures.
ORDER = ("bench_ingest.py", "bench_detectors.py", "bench_storage.py", "bench_sim.py", "bench_pipeline.py")
# Issue 11's comparable figures: raw limits, then the sustained rate, in the same run; --quick runs only these.
ISSUE11 = ("bench_raw.py", "bench_sustained.py")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated names, e.g. storage,ingest")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per bench before it counts as crashed")
    ap.add_argument("--quick", action="store_true", help="smoke run (≤ 3 min): only bench_raw and bench_sustained, --quick")
    args = ap.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    scripts = [HERE / name for name in ORDER if (HERE / name).exists()]
    scripts = [HERE / n for n in ISSUE11] if args.quick else scripts + [HERE / n for n in ISSUE11]
    if wanted:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    results: list[tuple[str, str, float]] = []
    for script in scripts:
        print(f"\n===== {script.name} =====", flush=True)
        t0 = time.monotonic()
        extra = ["--quick"] if args.quick and script.name in ISSUE11 else []
        proc = subprocess.Popen([sys.executable, str(script), *extra], cwd=HERE.parent)
        try:
            rc = proc.wait(timeout=args.timeout)
            status = "ok" if rc == 0 else f"crashed (exit {rc})"
        except subprocess.TimeoutExpired:
            # SIGINT, not SIGKILL: the bench's finally blocks stop the services it started.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            status = f"crashed (no result after {args.timeout:.0f} s)"
        results.append((script.name, status, time.monotonic() - t0))
    sys.path.insert(0, str(HERE))
    from harness import write_summary

    _, summary = write_summary()
    if summary is not None:
        print(f"wrote {summary}")
    print("\n===== summary =====")
    for name, status, secs in results:
        print(f"{name:<20} {status:<32} {secs:7.1f} s")
    return 0 if all(status == "ok" for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
