"""Run every benchmark in sequence, printing each one's output as it comes.

Benches print figures and ratios and never assert timings, so the exit status is non-zero only
when a bench crashed (non-zero exit or killed by its timeout). Extra arguments are not passed on:
run a bench directly to scale it. The soak (10 minutes and more) runs only when asked: ``--soak``
or ``--only soak``. At the end: ``latency.png`` (bench/plot_latency.py) and ``summary.md``.

    .venv/bin/python bench/run_all.py [--only storage,ingest,detectors] [--soak] [--quick] [--timeout 900] [--out DIR]
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
ORDER = ("bench_ingest.py", "bench_detectors.py", "bench_stage_pauses.py", "bench_storage.py", "bench_alert_storm.py",
         "bench_sim.py", "bench_pipeline.py")
# Issue 11's comparable figures: raw limits, then the sustained rate, then scale-out, in the same run;
# --quick runs only these, each with its own --quick.
ISSUE11 = ("bench_raw.py", "bench_sustained.py", "bench_scaleout.py")
SOAK = "bench_soak.py"  # --soak or --only soak; --quick makes it a 30 s smoke run
# With --quick, what keeps the whole run near 3 minutes on 2 cores with three stacks to start: the
# sustained search at one sensor cadence (10 s per sensor; the 10 Hz search is the full run's) and
# latency at 500/s and the sustained rate (not 2,000/s).
QUICK_ARGS: dict[str, tuple[str, ...]] = {"bench_sustained.py": ("--cadences", "10s", "--latency-rates", "500")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated names, e.g. storage,ingest (soak included)")
    ap.add_argument("--soak", action="store_true", help="run the soak after the others (10 minutes; --quick: 30 s)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per bench before it counts as crashed")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (≤ 3 min): only bench_raw, bench_sustained and bench_scaleout, --quick")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder for the issue-11 benches, the plot and the summary (default bench/results)")
    args = ap.parse_args()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    scripts = [HERE / name for name in ORDER if (HERE / name).exists()]
    scripts = [HERE / n for n in ISSUE11] if args.quick else scripts + [HERE / n for n in ISSUE11]
    if args.soak or "soak" in wanted:
        scripts.append(HERE / SOAK)
    if wanted:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in wanted]
    results: list[tuple[str, str, float]] = []
    for script in scripts:
        print(f"\n===== {script.name} =====", flush=True)
        t0 = time.monotonic()
        extra: list[str] = []
        if script.name in (*ISSUE11, SOAK):
            extra += ["--quick", *QUICK_ARGS.get(script.name, ())] if args.quick else []
            extra += ["--out", str(args.out)] if args.out else []
        timeout = args.timeout + (1200.0 if script.name == SOAK and not args.quick else 0.0)
        proc = subprocess.Popen([sys.executable, str(script), *extra], cwd=HERE.parent)
        try:
            rc = proc.wait(timeout=timeout)
            status = "ok" if rc == 0 else f"crashed (exit {rc})"
        except subprocess.TimeoutExpired:
            # SIGINT, not SIGKILL: the bench's finally blocks stop the services it started.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            status = f"crashed (no result after {timeout:.0f} s)"
        results.append((script.name, status, time.monotonic() - t0))
    sys.path.insert(0, str(HERE))
    from harness import RESULTS_DIR, write_summary
    from plot_latency import plot

    out = args.out or RESULTS_DIR
    png = plot(out)
    if png is not None:
        print(f"wrote {png}")
    _, summary = write_summary(out)
    if summary is not None:
        print(f"wrote {summary}")
    print("\n===== summary =====")
    for name, status, secs in results:
        print(f"{name:<20} {status:<32} {secs:7.1f} s")
    return 0 if all(status == "ok" for _, status, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
