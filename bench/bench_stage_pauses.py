"""How long the worker's detector stage holds the event loop, with and without its pause fixes.

The alert path shares the worker's event loop with the detector stage, so one long call delays
every alert behind it. This replays what the worker sees at 1,000 readings/s from 10,000 sensors
(one reading each every 10 s, 8 partitions, an envelope per partition every 50 ms) through
:class:`streams.detector_stage.DetectorStage` for 60 s of event time (about 4 s of CPU), and
prints each call's duration: p50 / p99 / max, the calls over 20 ms, and the time spent in full
garbage-collector passes. Two variants, each in a fresh process so their heaps do not mix:

- ``before``: no heap freezing and whole-partition checkpoints (what the worker did before);
- ``after``: the worker as shipped (heap frozen as sensors are built, checkpoints in slices).

    .venv/bin/python bench/bench_stage_pauses.py [--sensors 10000] [--rate 1000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import LOAD_BASE, LOAD_SHAPE, RESULTS_DIR, quantiles, result_header, write_result  # noqa: E402

from ioc.models import Reading  # noqa: E402
from ioc.settings import Settings  # noqa: E402
from ioc.storage.offset_ledger import Position  # noqa: E402
from ioc.storage.sensors_store import SensorEntry  # noqa: E402
from streams import detector_stage  # noqa: E402
from streams.long_lived_heap import LongLivedHeap  # noqa: E402
from streams.pipeline_stats import StageStats  # noqa: E402
from streams.topics import partition_for  # noqa: E402

PARTITIONS = 8
ENVELOPE_S = 0.05


async def _ack_now(**_: Any) -> asyncio.Future[None]:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    fut.set_result(None)
    return fut


async def _replay(variant: str, sensors: int, rate: float, seconds: float) -> dict[str, Any]:
    kinds = list(LOAD_SHAPE)
    entries = {f"LD{i:06d}": SensorEntry(f"LD{i:06d}", kinds[i % 3], "load", LOAD_SHAPE[kinds[i % 3]], 10.0, None, {})
               for i in range(sensors)}
    ids = list(entries)
    s = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", kafka_partitions=PARTITIONS)
    stage = detector_stage.DetectorStage(s, {}, _ack_now, StageStats("bench"), "readings")
    stage.start(entries)
    if variant == "before":
        gc.unfreeze()
        stage.heap = LongLivedHeap(every=10**12)
        detector_stage.FLUSH_SLICE = 10**12
    gc_s = [0.0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                gc_s[0] += time.perf_counter() - started[0]

    gc.callbacks.append(on_gc)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    offsets = [0] * PARTITIONS
    per = max(1, round(rate * ENVELOPE_S))
    calls: list[float] = []
    k = 0
    cpu0 = time.process_time()
    for step in range(int(seconds / ENVELOPE_S)):
        now = t0 + timedelta(seconds=step * ENVELOPE_S)
        parts: dict[int, list[Reading]] = {}
        for _ in range(per):
            sid = ids[k % sensors]
            k += 1
            e = entries[sid]
            parts.setdefault(partition_for(sid, PARTITIONS), []).append(
                Reading(sid, e.kind, now, k, {m: LOAD_BASE[m] * (1.0 + 0.001 * (k % 7)) for m in e.metrics}))
        items = []
        for p, rs in sorted(parts.items()):
            stage.observe(p, rs, now)
            items.append((Position("bench:readings", p, offsets[p]), rs, None))
            offsets[p] += 1
        a = time.perf_counter()
        await stage.run(items, now)
        calls.append((time.perf_counter() - a) * 1000.0)
    gc.callbacks.remove(on_gc)
    return {"variant": variant, "calls": len(calls), "call_ms": quantiles(calls),
            "calls_over_20ms": sum(1 for c in calls if c > 20.0), "gc_full_pass_ms": round(gc_s[0] * 1000.0, 1),
            "cpu_s": round(time.process_time() - cpu0, 2), "readings": k,
            "checkpoints": stage.stats.counters.get("detector_checkpoints", 0)}


def _child(conn: Any, variant: str, sensors: int, rate: float, seconds: float) -> None:
    conn.send(asyncio.run(_replay(variant, sensors, rate, seconds)))
    conn.close()


def run_variant(variant: str, sensors: int, rate: float, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, variant, sensors, rate, seconds))
    proc.start()
    out = parent.recv()
    proc.join(60)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=1_000.0, help="readings per second of event time")
    ap.add_argument("--seconds", type=float, default=60.0, help="event time replayed")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args()
    data = result_header("stage_pauses", False, sys.argv)
    data.update(sensors=args.sensors, rate=args.rate, seconds=args.seconds, partitions=PARTITIONS, variants={})
    for variant in ("before", "after"):
        data["variants"][variant] = run_variant(variant, args.sensors, args.rate, args.seconds)
    b, a = data["variants"]["before"], data["variants"]["after"]
    data["ratios"] = {"max_call_after_over_before": round(a["call_ms"]["max"] / b["call_ms"]["max"], 3),
                      "cpu_after_over_before": round(a["cpu_s"] / b["cpu_s"], 3)}
    t = Table(title=f"Detector stage calls, {args.sensors:,} sensors at {args.rate:,.0f}/s, {args.seconds:.0f} s of event time")
    for col in ("variant", "calls", "ms p50 / p99 / max", "calls > 20 ms", "full GC passes, ms", "CPU s"):
        t.add_column(col, justify="right")
    for v in (b, a):
        q = v["call_ms"]
        t.add_row(v["variant"], f"{v['calls']:,}", f"{q['p50']:.1f} / {q['p99']:.1f} / {q['max']:.1f}",
                  str(v["calls_over_20ms"]), f"{v['gc_full_pass_ms']:.0f}", f"{v['cpu_s']:.2f}")
    Console().print(t)
    print(f"longest call after/before {data['ratios']['max_call_after_over_before']}, CPU after/before "
          f"{data['ratios']['cpu_after_over_before']}")
    print(f"wrote {write_result(args.out, 'stage_pauses', data)}")


if __name__ == "__main__":
    main()
