"""Scale-out: what a second worker or a second bridge costs at a fixed offered rate.

Starts its own local stack (``ioc.stack``; loopback only) and, one after the other, three pipelines
on fresh databases, topics, consumer groups and share groups:

- **a** 1 worker + 1 bridge (the baseline);
- **b** 2 workers + 1 bridge: one Faust app id, so one consumer group, and the Kafka partitions split
  between the two workers;
- **c** 1 worker + 2 bridges: one ``IOC_SHARE_GROUP`` (``IOC_MQTT_SHARED_SUBSCRIPTION`` is on by
  default: ``$share/<group>/…``), own MQTT client ids, so Mosquitto hands each message to one of them.

Each is warmed up until every partition is assigned, every worker stored readings and every bridge
received some, in two rounds in a row (``PipelineProcs.warm_up_all``: Tansu's first assignment and
the rebalance after the second worker joins take 10-30 s each). Then the load of bench_sustained
(``Bench.run_load``: QoS 1 from its own process, one reading per sensor every 10 s, so rate × 10
sensors) for ``--hold`` seconds, and per configuration:

- zero loss counted row by row (every (sensor, ts, metric) published is in ``readings``);
- sensor → row visible latency, p50 / p99 (a 20 ms poll; 1 in ``--sample`` readings);
- CPU-seconds per 1k readings per process tree, summed over the workers, over the bridges and over
  the whole pipeline (workers, bridges, Tansu, PostgreSQL, Mosquitto), from the first publish until
  the last row is visible; readings each worker stored and each bridge received (``pipeline_metrics``);
- the ratio of b and c to a. The issue's target: 2 workers within 1.15× of 1 worker's CPU-s per 1k
  (``workers_target_met`` compares the two workers' sum with the one worker; the whole pipeline's
  ratio is reported next to it);
- idle CPU % per process over ``--idle`` s before the load: a fixed cost per process (timers,
  metrics, offset checks, registry reloads) that a second process adds whatever the rate.

Writes ``bench/results/scaleout.json``; asserts nothing about timing.

    .venv/bin/python bench/bench_scaleout.py [--rate 1000] [--hold 30] [--configs a,b,c] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sustained import Bench, setting
from harness import (
    RESULTS_DIR,
    BenchStack,
    CpuWindow,
    PipelineProcs,
    StartedPids,
    add_load_args,
    metric_latest,
    result_header,
    short_tag,
    write_result,
)

console = Console(width=170)

#: name -> (workers, bridges, label)
CONFIGS: dict[str, tuple[int, int, str]] = {
    "a": (1, 1, "1 worker + 1 bridge"),
    "b": (2, 1, "2 workers + 1 bridge"),
    "c": (1, 2, "1 worker + 2 bridges"),
}
CADENCE = "10s"  # bench_sustained's cadence: one reading per sensor every 10 s
TARGET_WORKERS_RATIO = 1.15


def _delta(after: dict[str, float], before: dict[str, float], names: dict[str, str]) -> dict[str, int]:
    return {name: int(after.get(key, 0) - before.get(key, 0)) for name, key in names.items()}


def _sums(per_1k: dict[str, float], workers: list[str], bridges: list[str]) -> dict[str, float]:
    return {"workers": round(sum(per_1k.get(w, 0.0) for w in workers), 4),
            "bridges": round(sum(per_1k.get(b, 0.0) for b in bridges), 4),
            "total_pipeline": per_1k.get("total_pipeline", 0.0)}


def run_config(args: argparse.Namespace, stack: BenchStack, pids: StartedPids, key: str) -> dict[str, Any]:
    workers, bridges, label = CONFIGS[key]
    tag = f"{key}{short_tag()}"
    console.print(f"[bold]{key}: {label}[/] at {args.rate:,.0f} readings/s, hold {args.hold:g} s")
    pipe = PipelineProcs(stack, stack.new_database(tag), tag, pids, IOC_REGISTRY_REFRESH_S=str(args.registry_refresh),
                         **({"IOC_METRICS_INTERVAL_S": "1"} if args.quick else {}), **dict(args.set))
    watch = stack.watch()
    try:
        t0 = time.monotonic()
        pipe.start(workers=workers, bridges=bridges)
        pipe.watch_into(watch)
        watch.start()
        warm = pipe.warm_up_all(args.warm_up_timeout)
        console.print(f"  warm after {warm:.1f} s (every worker stored and every bridge received readings)")
        bench = Bench(args, stack, pipe, watch, pids, None)
        bench.pool.use(CADENCE, max(1, round(args.rate * 10)))  # register and activate before the clock starts
        idle = CpuWindow(watch).begin()
        time.sleep(args.idle)
        idle_cpu = {k: round(v / args.idle * 100, 2) for k, v in idle.end().items()} if args.idle > 0 else {}
        sinks = pipe.sink_names()
        before = metric_latest(pipe.db, "sink", "readings_total"), metric_latest(pipe.db, "bridge", "received_total")
        step = bench.run_load(CADENCE, args.rate, args.hold)
        time.sleep(float(pipe.env["IOC_METRICS_INTERVAL_S"]) + 0.5)
        after = metric_latest(pipe.db, "sink", "readings_total"), metric_latest(pipe.db, "bridge", "received_total")
        pipe.check()
    finally:
        watch.stop()
        pipe.stop()
    step.update(
        config=key, label=label, workers=workers, bridges=bridges, warm_up_s=round(warm, 1),
        idle_cpu_pct=idle_cpu, idle_s=args.idle,
        setup_s=round(time.monotonic() - t0, 1),
        cpu_s_per_1k_sums=_sums(step["cpu_s_per_1k_readings"], pipe.workers, list(pipe.bridges)),
        readings_by_worker=_delta(after[0], before[0], sinks),
        received_by_bridge=_delta(after[1], before[1], pipe.bridges),
    )
    q = step["row_latency_ms"]
    console.print(f"  {step['reason']}: missing {step['missing_rows']}, row p50/p99 {q['p50']}/{q['p99']} ms,"
                  f" CPU-s/1k {step['cpu_s_per_1k_sums']}, by worker {step['readings_by_worker']},"
                  f" by bridge {step['received_by_bridge']}")
    return step


def ratios(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """CPU-s per 1k of b and c over a: the whole pipeline, the workers' sum and the bridges' sum."""
    base = configs.get("a")
    out: dict[str, dict[str, float]] = {}
    if not base:
        return out
    for key in ("b", "c"):
        if key not in configs:
            continue
        r = {}
        for part in ("total_pipeline", "workers", "bridges"):
            a = base["cpu_s_per_1k_sums"][part]
            if a:
                r[part] = round(configs[key]["cpu_s_per_1k_sums"][part] / a, 3)
        out[f"{key}/a"] = r
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    pids = StartedPids()
    data = result_header("scaleout", args.quick, sys.argv)
    data.update(rate=args.rate, hold_s=args.hold, cadence_s=10.0, sensors=max(1, round(args.rate * 10)),
                latency_sample=f"1 in {args.sample}", registry_refresh_s=args.registry_refresh,
                target=f"2 workers within {TARGET_WORKERS_RATIO}x of 1 worker's CPU-s per 1k readings",
                started_pids=pids.items, configs={})
    t_all = time.perf_counter()
    with BenchStack("scaleout", pids) as stack:
        for key in args.configs:
            data["configs"][key] = run_config(args, stack, pids, key)
    data["ratios"] = ratios(data["configs"])
    b = data["ratios"].get("b/a", {}).get("workers")
    data["workers_target_met"] = None if b is None else b <= TARGET_WORKERS_RATIO
    data["seconds"] = round(time.perf_counter() - t_all, 1)
    return data


def print_table(data: dict[str, Any]) -> None:
    t = Table(title=f"Scale-out at {data['rate']:,.0f} readings/s ({data['sensors']:,} sensors, one reading each"
                    f" every 10 s), hold {data['hold_s']:g} s; CPU-s per 1k readings")
    for col in ("config", "missing rows", "row p50 / p99 ms", "workers", "bridges", "tansu", "postgres",
                "mosquitto", "pipeline", "vs a", "split (per worker / bridge)", "idle CPU % (workers, bridges)"):
        t.add_column(col, justify="left" if col == "config" else "right")
    ratio = data.get("ratios", {})
    for key, c in data["configs"].items():
        cpu, sums, q = c["cpu_s_per_1k_readings"], c["cpu_s_per_1k_sums"], c["row_latency_ms"]
        r = ratio.get(f"{key}/a", {}).get("total_pipeline")
        split = list(c["readings_by_worker"].values()) if c["workers"] > 1 else list(c["received_by_bridge"].values())
        idle = c.get("idle_cpu_pct", {})

        def each(names: list[str], total: float, d: dict[str, float] = cpu) -> str:
            return f"{total:.3f}" if len(names) < 2 else f"{total:.3f} = " + " + ".join(f"{d.get(n, 0):.3f}" for n in names)

        ws = [n for n in cpu if n.startswith("worker")]
        bs = [n for n in cpu if n.startswith("bridge")]
        t.add_row(f"{key}: {c['workers']}w + {c['bridges']}b", f"{c['missing_rows']:,}", f"{q['p50']:.0f} / {q['p99']:.0f}",
                  each(ws, sums["workers"]), each(bs, sums["bridges"]), f"{cpu.get('tansu', 0):.3f}",
                  f"{cpu.get('postgres', 0):.3f}", f"{cpu.get('mosquitto', 0):.3f}", f"{sums['total_pipeline']:.3f}",
                  "1.00" if key == "a" else (f"{r:.2f}" if r else "-"),
                  " / ".join(f"{n:,}" for n in split) if len(split) > 1 else "-",
                  ", ".join(f"{idle.get(n, 0):.1f}" for n in ws + bs) if idle else "-")
    console.print(t)
    if "b/a" in ratio:
        console.print(f"b/a: pipeline {ratio['b/a'].get('total_pipeline')}, workers {ratio['b/a'].get('workers')}"
                      f" (target ≤ {TARGET_WORKERS_RATIO}: {'met' if data['workers_target_met'] else 'not met'})")
    if "c/a" in ratio:
        console.print(f"c/a: pipeline {ratio['c/a'].get('total_pipeline')}, bridges {ratio['c/a'].get('bridges')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 200 readings/s, hold 3 s, no idle phase, registry refresh 1 s, metrics every 1 s")
    ap.add_argument("--rate", type=float, default=None, help="offered readings/s (default 1000; --quick 200)")
    ap.add_argument("--hold", type=float, default=None, help="seconds of load per configuration (default 30; --quick 3)")
    ap.add_argument("--configs", default="a,b,c", help="comma-separated: a (1+1), b (2 workers), c (2 bridges)")
    add_load_args(ap)
    ap.add_argument("--registry-refresh", type=float, default=None,
                    help="IOC_REGISTRY_REFRESH_S of the workers and bridges (default 10; --quick 1)")
    ap.add_argument("--idle", type=float, default=None,
                    help="seconds of idle CPU measured per configuration before the load (default 10; --quick 0)")
    ap.add_argument("--warm-up-timeout", type=float, default=300.0,
                    help="seconds until every worker and bridge must be busy")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where scaleout.json goes")
    ap.add_argument("--set", action="append", default=[], type=setting, metavar="IOC_NAME=VALUE",
                    help="a setting for every worker and bridge of the run, e.g. IOC_TABLE_STANDBY_REPLICAS=0")
    args = ap.parse_args()
    q = args.quick
    args.rate = args.rate or (200.0 if q else 1000.0)
    args.hold = args.hold or (3.0 if q else 30.0)
    args.registry_refresh = args.registry_refresh or (1.0 if q else 10.0)
    args.idle = args.idle if args.idle is not None else (0.0 if q else 10.0)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not args.configs or not set(args.configs) <= set(CONFIGS):
        ap.error(f"--configs: choose from {list(CONFIGS)}")
    data = run(args)
    print_table(data)
    path = write_result(args.out, "scaleout", data)
    console.print(f"wrote {path} in {data['seconds']:.0f} s")


if __name__ == "__main__":
    main()
