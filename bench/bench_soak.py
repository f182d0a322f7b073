"""Bounded soak: 10× the city's sensors for ``--minutes``, watching every process's memory for growth.

Starts its own local stack (``ioc.stack``; loopback only), one ``ioc worker`` and one ``ioc bridge``
on a fresh database and topics, warms them up, then offers bench_sustained's load (``Bench.run_load``:
QoS 1 from its own process, traffic / air / water level in equal shares) from ``--scale`` × the
registry's sensors (83 in ``sensors_sim/data/sensors.json``, so 830) for ``--minutes`` (10).

Cadence: one reading per sensor every ``--period`` s, 1 s by default, so 830 readings/s. That is the
conservative end: the city's gauges report every few minutes and its traffic and air stations every
10 s to 1 min, so 1 s per sensor is 10-300× the real traffic of 10× the city; it keeps the pipeline
at about the rate bench_sustained finds sustainable on a 2-core machine, where slow leaks show soonest.

Measured:

- RSS per process tree (worker, bridge, Tansu, PostgreSQL with its backends, Mosquitto) every
  ``--sample-every`` s (10), and PSS next to it: PostgreSQL's backends map the same shared buffers,
  so its RSS sum grows as they touch more of them, while PSS counts each page once.
- After ``--warm-up`` minutes (2), a least-squares line through the samples taken under load gives the
  slope in MB per 10 minutes. **Flat rule**: the line's rise over the post-warm-up window is below
  10 MB, or below 5 % of the line's value at the start of that window (``flat`` in the JSON; judged
  on RSS and, separately, on PSS). Start (first sample), end (last sample under load) and peak are
  reported too.
- Sensor → row visible latency p50 / p99 over the whole soak (a 20 ms poll of ``readings``, 1 in
  ``--sample`` readings), and the worker's own sensor → committed p99 per minute from
  ``pipeline_metrics`` (drift shows there).
- Zero loss, counted row by row at the end: every (sensor, ts, metric) published is in ``readings``.
- CPU-seconds per 1k readings per process over the soak, and the pipeline's CPU-s per 1k in the first
  and second half of the post-warm-up window.

Reading the figures: the local stack's Tansu keeps every topic in memory (``memory://``, no
retention), so its RSS grows with the log by design; PostgreSQL's PSS grows while its shared buffers
(256 MB in ``ioc.stack``) fill with the new rows and levels off once they are full. Neither is the
pipeline's own memory; worker, bridge and Mosquitto are.

Writes ``bench/results/soak.json``; asserts nothing about timing or memory.

    .venv/bin/python bench/bench_soak.py [--minutes 10] [--scale 10] [--period 1] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_sustained
from bench_sustained import Bench
from harness import (
    RESULTS_DIR,
    BenchStack,
    PipelineProcs,
    ProcWatch,
    StartedPids,
    add_load_args,
    result_header,
    short_tag,
    write_result,
)

console = Console(width=170)

CADENCE = "soak"  # registered in bench_sustained's cadence table with the soak's period
CODE = "K"  # its letter in the load sensors' ids
FLAT_MB = 10.0
FLAT_PCT = 5.0
PROCS = ("worker", "bridge", "tansu", "postgres", "mosquitto")


class MemorySampler(threading.Thread):
    """RSS, PSS and cumulative CPU of every watched tree every ``every_s`` seconds."""

    def __init__(self, watch: ProcWatch, every_s: float) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.watch = watch
        self.every_s = every_s
        self.t0 = time.monotonic()
        self.samples: list[dict[str, Any]] = []
        self._stop_event = threading.Event()

    def sample(self) -> None:
        self.samples.append({"t_s": round(time.monotonic() - self.t0, 1),
                             "rss_mb": {k: round(v, 1) for k, v in self.watch.rss_mb().items()},
                             "pss_mb": {k: round(v, 1) for k, v in self.watch.pss_mb().items()},
                             "cpu_s": {k: round(v, 2) for k, v in self.watch.cpu().items()}})

    def run(self) -> None:
        self.sample()
        while not self._stop_event.wait(self.every_s - (time.monotonic() - self.t0) % self.every_s):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)
        self.sample()  # one more after the drain


def trend(points: list[tuple[float, float]], warm_s: float, end_s: float) -> dict[str, Any]:
    """Start / end / peak of one process's series and its slope after the warm-up (see the flat rule)."""
    under_load = [(t, v) for t, v in points if t <= end_s]
    fit = [(t, v) for t, v in under_load if t >= warm_s]
    out: dict[str, Any] = {
        "start_mb": under_load[0][1] if under_load else math.nan,
        "at_warm_up_mb": fit[0][1] if fit else math.nan,
        "end_mb": under_load[-1][1] if under_load else math.nan,
        "after_drain_mb": points[-1][1] if points else math.nan,
        "peak_mb": max((v for _, v in points), default=math.nan),
    }
    if len(fit) < 3:
        out.update(slope_mb_per_10min=None, growth_mb=None, growth_pct=None, flat=None, fit_samples=len(fit))
        return out
    t = np.array([p[0] for p in fit])
    v = np.array([p[1] for p in fit])
    slope, icpt = np.polyfit(t, v, 1)
    growth = float(slope * (t[-1] - t[0]))
    base = float(icpt + slope * t[0])
    pct = 100.0 * growth / base if base > 0 else math.inf
    out.update(slope_mb_per_10min=round(float(slope) * 600, 2), growth_mb=round(growth, 1),
               growth_pct=round(pct, 2), flat=bool(growth < FLAT_MB or pct < FLAT_PCT), fit_samples=len(fit),
               fit_window_s=[round(float(t[0]), 1), round(float(t[-1]), 1)])
    return out


def cpu_halves(samples: list[dict[str, Any]], warm_s: float, end_s: float, rate: float) -> dict[str, Any]:
    """CPU-s per 1k offered readings per process and for the pipeline, in the first and the second half
    of the post-warm-up window: a process whose cost per reading drifts up shows here."""
    win = [s for s in samples if warm_s <= s["t_s"] <= end_s]
    if len(win) < 3:
        return {"first_half": None, "second_half": None, "by_process": {}}
    mid = win[len(win) // 2]

    def per_1k(a: dict[str, Any], b: dict[str, Any], names: tuple[str, ...]) -> float:
        used = sum(b["cpu_s"].get(k, 0.0) - a["cpu_s"].get(k, 0.0) for k in names)
        return round(used / (rate * (b["t_s"] - a["t_s"]) / 1000.0), 4)

    return {"first_half": per_1k(win[0], mid, PROCS), "second_half": per_1k(mid, win[-1], PROCS),
            "windows_s": [win[0]["t_s"], mid["t_s"], win[-1]["t_s"]],
            "by_process": {n: [per_1k(win[0], mid, (n,)), per_1k(mid, win[-1], (n,))] for n in PROCS
                           if n in win[-1]["cpu_s"]}}


def latency_by_minute(db: str, since: datetime) -> list[dict[str, Any]]:
    """The worker's sensor → committed p99 (written every IOC_METRICS_INTERVAL_S): per minute, the
    median and the max of those p99s."""
    with psycopg.connect(db, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT ts, value FROM pipeline_metrics WHERE stage = 'sink'"
                            " AND metric = 'e2e_latency_ms_p99' AND ts >= %s ORDER BY ts", (since,)).fetchall()
    buckets: dict[int, list[float]] = {}
    for ts, v in rows:
        buckets.setdefault(int((ts - since).total_seconds() // 60), []).append(float(v))
    return [{"minute": m, "n": len(vs), "median_p99_ms": round(float(np.median(vs)), 1), "max_p99_ms": round(max(vs), 1)}
            for m, vs in sorted(buckets.items())]


def run(args: argparse.Namespace) -> dict[str, Any]:
    bench_sustained.CADENCES[CADENCE] = args.period
    bench_sustained.CODES[CADENCE] = CODE
    pids = StartedPids()
    rate = args.sensors / args.period
    seconds = args.minutes * 60.0
    data = result_header("soak", args.quick, sys.argv)
    data.update(sensors=args.sensors, period_s=args.period, rate=rate, minutes=args.minutes,
                warm_up_min=args.warm_up, sample_every_s=args.sample_every, latency_sample=f"1 in {args.sample}",
                registry_refresh_s=args.registry_refresh, started_pids=pids.items,
                flat_rule=(f"flat: the least-squares line through the samples under load after the warm-up rises less"
                           f" than {FLAT_MB:g} MB or less than {FLAT_PCT:g} % of its value at the warm-up's end"))
    t_all = time.perf_counter()
    tag = short_tag()
    watch: ProcWatch | None = None
    sampler: MemorySampler | None = None
    with BenchStack("soak", pids) as stack:
        pipe = PipelineProcs(stack, stack.new_database(tag), tag, pids, IOC_REGISTRY_REFRESH_S=str(args.registry_refresh))
        try:
            pipe.start()
            watch = stack.watch()
            pipe.watch_into(watch)
            watch.start()
            data["warm_up_s"] = round(pipe.warm_up(), 1)
            bench = Bench(args, stack, pipe, watch, pids, None)
            bench.pool.use(CADENCE, args.sensors)  # register and activate before the clock starts
            console.print(f"soak: {args.sensors:,} sensors, one reading each every {args.period:g} s ="
                          f" {rate:,.0f} readings/s for {args.minutes:g} min; memory every {args.sample_every:g} s")
            since = datetime.now(UTC)
            sampler = MemorySampler(watch, args.sample_every)
            sampler.start()
            step = bench.run_load(CADENCE, rate, seconds)
            time.sleep(float(pipe.env["IOC_METRICS_INTERVAL_S"]) + 1.0)
            pipe.check()
            data["latency_by_minute"] = latency_by_minute(pipe.db, since)
        finally:
            if sampler is not None:
                sampler.stop()
            if watch is not None:
                watch.stop()
            pipe.stop()
    samples = sampler.samples if sampler else []
    warm_s, end_s = args.warm_up * 60.0, seconds + 2.5  # the generators start ~2 s after the sampler
    names = [n for n in PROCS if any(n in s["rss_mb"] for s in samples)]
    data["memory"] = {
        n: {"rss": trend([(s["t_s"], s["rss_mb"][n]) for s in samples if n in s["rss_mb"]], warm_s, end_s),
            "pss": trend([(s["t_s"], s["pss_mb"][n]) for s in samples if n in s["pss_mb"]], warm_s, end_s)}
        for n in names
    }
    data["all_flat_rss"] = all(m["rss"]["flat"] for m in data["memory"].values())
    data["all_flat_pss"] = all(m["pss"]["flat"] for m in data["memory"].values())
    data["cpu_s_per_1k_halves"] = cpu_halves(samples, warm_s, end_s, rate)
    data["samples"] = samples
    data["load"] = {k: v for k, v in step.items() if k not in ("rss_peak_mb",)}
    data["row_latency_ms"] = step["row_latency_ms"]
    data["missing_rows"] = step["missing_rows"]
    data["cpu_s_per_1k_readings"] = step["cpu_s_per_1k_readings"]
    data["seconds"] = round(time.perf_counter() - t_all, 1)
    return data


def print_tables(data: dict[str, Any]) -> None:
    t = Table(title=f"Soak: {data['sensors']:,} sensors every {data['period_s']:g} s = {data['rate']:,.0f} readings/s"
                    f" for {data['minutes']:g} min; RSS MB (PSS MB), slope after {data['warm_up_min']:g} min warm-up")
    for col in ("process", "start", "at warm-up", "end", "peak", "slope MB / 10 min", "growth", "flat (RSS / PSS)",
                "CPU-s / 1k", "CPU-s / 1k, halves after warm-up"):
        t.add_column(col, justify="left" if col == "process" else "right")
    cpu = data["cpu_s_per_1k_readings"]
    halves = data["cpu_s_per_1k_halves"].get("by_process", {})
    for n, m in data["memory"].items():
        r, p = m["rss"], m["pss"]

        def two(k: str, r: dict[str, Any] = r, p: dict[str, Any] = p) -> str:
            return "-" if r.get(k) is None else f"{r[k]:,.1f} ({p[k]:,.1f})"

        t.add_row(n, two("start_mb"), two("at_warm_up_mb"), two("end_mb"), two("peak_mb"), two("slope_mb_per_10min"),
                  "-" if r["growth_mb"] is None else f"{r['growth_mb']:+.1f} MB ({r['growth_pct']:+.1f} %)",
                  f"{'yes' if r['flat'] else 'NO'} / {'yes' if p['flat'] else 'NO'}", f"{cpu.get(n, 0):.3f}",
                  " → ".join(f"{v:.3f}" for v in halves.get(n, [])))
    console.print(t)
    q = data["row_latency_ms"]
    ld = data["load"]
    console.print(f"published {ld['published']:,} (acked {ld['acked']:,}, achieved {ld['achieved_rate']:,.0f}/s),"
                  f" missing rows {data['missing_rows']:,}, drain {ld['drain_s']} s; row latency p50 {q['p50']} /"
                  f" p99 {q['p99']} / max {q['max']} ms (n={q['n']:,}); pipeline CPU-s per 1k"
                  f" {cpu.get('total_pipeline')} (halves after warm-up {data['cpu_s_per_1k_halves']['first_half']} →"
                  f" {data['cpu_s_per_1k_halves']['second_half']})")
    if data.get("latency_by_minute"):
        console.print("worker sensor→committed p99 by minute (median / max ms): " + ", ".join(
            f"{m['minute']}: {m['median_p99_ms']:.0f}/{m['max_p99_ms']:.0f}" for m in data["latency_by_minute"]))


def main() -> None:
    from sensors_sim.registry import load_registry

    city = len(load_registry())
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 30 s, 1x the city's sensors, 10 s warm-up, a sample every 5 s")
    ap.add_argument("--minutes", type=float, default=None, help="length of the load (default 10; --quick 0.5)")
    ap.add_argument("--scale", type=float, default=None,
                    help=f"sensors = scale x the registry's {city} (default 10; --quick 1)")
    ap.add_argument("--sensors", type=int, default=None, help="number of sensors (overrides --scale)")
    ap.add_argument("--period", type=float, default=1.0, help="seconds between one sensor's readings (default 1)")
    ap.add_argument("--warm-up", type=float, default=None, help="minutes left out of the slope (default 2; --quick 1/6)")
    ap.add_argument("--sample-every", type=float, default=None, help="seconds between memory samples (default 10; --quick 5)")
    add_load_args(ap)
    ap.add_argument("--registry-refresh", type=float, default=None,
                    help="IOC_REGISTRY_REFRESH_S of the worker and bridge (default 10; --quick 2)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where soak.json goes")
    args = ap.parse_args()
    q = args.quick
    args.minutes = args.minutes or (0.5 if q else 10.0)
    args.scale = args.scale or (1.0 if q else 10.0)
    args.sensors = args.sensors or max(1, round(args.scale * city))
    args.warm_up = args.warm_up if args.warm_up is not None else (10 / 60 if q else 2.0)
    args.sample_every = args.sample_every or (5.0 if q else 10.0)
    args.registry_refresh = args.registry_refresh or (2.0 if q else 10.0)
    if args.period <= 0 or args.minutes <= 0:
        ap.error("--period and --minutes must be positive")
    data = run(args)
    print_tables(data)
    path = write_result(args.out, "soak", data)
    console.print(f"wrote {path} in {data['seconds']:.0f} s")


if __name__ == "__main__":
    main()
