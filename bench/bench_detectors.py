"""Detector cost per sensor kind: µs per reading for every detector of one sensor, and its state.

Issue 8's target: every detector of one sensor together takes at most 50 µs median per reading.
For each sensor kind of the bundled registry this builds exactly what the worker builds
(:func:`streams.detection.build_detectors` on the registry entry the scorer derives from a
simulation), feeds the simulated series of a scenario (valid messages, in send order, as the
bridge delivers them) and prints, per kind:

- median and p99 µs per reading of ``update_all`` over all of the sensor's detectors, warm
  (readings after the first ``--warm-h`` hours), and the ratio to the 50 µs target;
- the per-detector breakdown (median and mean µs of each detector's ``update``);
- the state the worker writes per envelope (``state_of``): its JSON size in bytes (largest seen
  over the run, and at the end), and the µs to build it (``to_state``), to serialise and
  deserialise it with ``json`` and with ``msgspec.json``, and to restore it (``from_state``).

Then the detect stage over the whole scenario (every sensor, in envelopes of the worker's size):
:meth:`streams.detection.DetectorBank.process` with a table that JSON-encodes each value written
(what the changelog does); the detectors alone (``update_all`` + ``state_of`` + ``json.dumps`` per
touched sensor per envelope); ``update_all`` alone; and the state bytes per envelope, now and if
each rule's rarely-changing parts (``COLD_KEYS``: the seasonal profile) were written only on change.

Prints figures and ratios and asserts nothing about timing; writes ``bench/results/detectors.json``.
Bounded: one simulated scenario, at most ``--sensors-per-kind`` sensors per kind, and at most
``--bank-readings`` readings through the detect stage (~20 s in all on one core).

    .venv/bin/python bench/bench_detectors.py [--scenario typhoon_damrey] [--sensors-per-kind 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

import detectors
from detectors.sensor_set import update_all
from ioc.composition.scoring import ENVELOPE_READINGS, sensor_entries
from ioc.models import Reading
from ioc.storage.sensors_store import SensorEntry
from sensors_sim.encode import message_order
from sensors_sim.engine import Simulation, simulate
from streams.detection import DetectorBank, build_detectors, state_of

TARGET_US = 50.0
#: Per-rule state keys that change rarely (the seasonal profile: once an hour), for the split estimate.
COLD_KEYS = ("profile",)
HERE = Path(__file__).resolve().parent
perf_ns = time.perf_counter_ns  # per reading: the lowest overhead
cpu_ns = time.process_time_ns  # totals and repeated calls: CPU time, steadier on a shared machine


def readings_by_sensor(sim: Simulation) -> tuple[dict[str, list[Reading]], list[Reading]]:
    """Valid messages as Readings, in send order: per sensor, and all sensors interleaved."""
    sidx, ridx, _ = message_order(sim)
    per = [(d.spec.sensor_id, d.spec.kind, d.spec.metric_names, d.ts.tolist(), d.seq.tolist(), d.values.tolist(),
            d.bad.tolist()) for d in sim.deliveries]
    by: dict[str, list[Reading]] = defaultdict(list)
    every: list[Reading] = []
    for s, r in zip(sidx.tolist(), ridx.tolist(), strict=True):
        sid, kind, names, tss, seqs, vals, bad = per[s]
        if bad[r] or not all(math.isfinite(v) for v in vals[r]):
            continue  # the bridge dead-letters it
        reading = Reading(sid, kind, datetime.fromtimestamp(tss[r], UTC), seqs[r], dict(zip(names, vals[r], strict=True)))
        by[sid].append(reading)
        every.append(reading)
    return by, every


def pick_sensors(entries: dict[str, SensorEntry], by: dict[str, list[Reading]], per_kind: int) -> dict[str, list[str]]:
    """Per kind, the sensors with the most detectors (then most readings): the worst case of the kind."""
    kinds: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for sid, e in entries.items():
        if by.get(sid):
            kinds[e.kind].append((-len(build_detectors(e)), -len(by[sid]), sid))
    return {k: [sid for *_, sid in sorted(v)[:per_kind]] for k, v in sorted(kinds.items())}


def quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def per_call_us(fn: Callable[[], object], min_s: float = 0.05) -> float:
    """Median CPU µs of one call of ``fn`` (repeated for at least ``min_s``, 5 rounds)."""
    rounds = []
    for _ in range(5):
        n, t0 = 0, cpu_ns()
        while True:
            fn()
            n += 1
            if cpu_ns() - t0 >= min_s * 1e9 / 5:
                break
        rounds.append((cpu_ns() - t0) / n / 1e3)
    return statistics.median(rounds)


def time_sensor(entry: SensorEntry, readings: list[Reading], warm_from: float) -> dict[str, Any]:
    """Everything measured for one sensor's series."""
    # pass 1: all detectors together, as the worker calls them
    dets = build_detectors(entry)
    total: list[float] = []
    sizes: list[int] = []
    every = max(1, len(readings) // 50)
    for i, r in enumerate(readings):
        t0 = perf_ns()
        update_all(dets, r)
        dt = perf_ns() - t0
        if r.ts.timestamp() >= warm_from:
            total.append(dt / 1e3)
        if i % every == 0:
            sizes.append(len(json.dumps(state_of(dets))))
    # pass 2: each detector on its own (fresh detectors, same series)
    dets2 = build_detectors(entry)
    each: dict[str, list[float]] = {d.rule: [] for d in dets2}
    for r in readings:
        warm = r.ts.timestamp() >= warm_from
        for d in dets2:
            t0 = perf_ns()
            d.update(r)
            dt = perf_ns() - t0
            if warm:
                each[d.rule].append(dt / 1e3)
    # the state the worker writes per envelope, at the end of the series (windows full)
    state = state_of(dets)
    text = json.dumps(state)
    raw = msgspec.json.encode(state)
    enc, dec = msgspec.json.Encoder(), msgspec.json.Decoder()
    rules = state["rules"]

    def restore() -> None:
        for d in build_detectors(entry):
            d.from_state(rules[d.rule])

    per_rule_bytes = {rule: len(json.dumps(s)) for rule, s in rules.items()}
    return {
        "readings": len(readings), "warm_readings": len(total),
        "update_us": total,
        "detectors": {rule: {"median_us": statistics.median(v) if v else None, "mean_us": statistics.fmean(v) if v else None}
                      for rule, v in each.items()},
        "state_bytes_end": len(text), "state_bytes_max": max(sizes + [len(text)]),
        "state_bytes_msgspec": len(raw), "state_bytes_per_rule": per_rule_bytes,
        "to_state_us": per_call_us(lambda: state_of(dets)),
        "json_dumps_us": per_call_us(lambda: json.dumps(state)),
        "json_loads_us": per_call_us(lambda: json.loads(text)),
        "msgspec_encode_us": per_call_us(lambda: enc.encode(state)),
        "msgspec_decode_us": per_call_us(lambda: dec.decode(raw)),
        "build_and_restore_us": per_call_us(restore),
    }


class JsonTable(MutableMapping[str, Any]):
    """A dict that JSON-encodes each value written, as the changelogged Faust table does."""

    def __init__(self) -> None:
        self.d: dict[str, Any] = {}
        self.encoded_bytes = 0

    def __getitem__(self, k: str) -> Any:
        return self.d[k]

    def __setitem__(self, k: str, v: Any) -> None:
        # the bank writes msgspec-encoded bytes (the table's codec is raw); older code wrote dicts
        self.encoded_bytes += len(v) if isinstance(v, bytes | bytearray) else len(json.dumps(v))
        self.d[k] = v

    def __delitem__(self, k: str) -> None:
        del self.d[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self.d)

    def __len__(self) -> int:
        return len(self.d)


def _cold_bytes(state: dict[str, Any]) -> tuple[int, dict[str, str]]:
    """JSON bytes of the parts of a sensor's state that change rarely (``COLD_KEYS`` of each rule),
    and those parts by rule, to see whether they changed since the last write."""
    parts = {f"{rule}.{k}": json.dumps(st[k], sort_keys=True) for rule, st in state["rules"].items()
             for k in COLD_KEYS if k in st}
    return sum(len(v) for v in parts.values()), parts


def time_stages(entries: dict[str, SensorEntry], every: list[Reading], warm_from: float, limit: int,
                envelope: int) -> dict[str, Any]:
    """The detect stage three ways over the same readings, in envelopes of the worker's size:

    - ``bank``: :meth:`DetectorBank.process` as the worker calls it (its own per-reading work included),
      with a table that JSON-encodes every value written to it, as the changelog does;
    - ``detectors``: ``update_all`` per reading and ``state_of`` + ``json.dumps`` once per touched
      sensor per envelope: what the detectors themselves cost the worker;
    - ``update_only``: ``update_all`` per reading, no state written.

    Also the bytes the changelog would carry per envelope if each rule's rarely-changing parts
    (``COLD_KEYS``, e.g. the seasonal profile) were written only when they change. The readings
    before ``warm_from`` are fed first, untimed, so state and windows are at their working size.
    """
    w0 = next((i for i, r in enumerate(every) if r.ts.timestamp() >= warm_from), len(every))
    warmup, readings = every[:w0], every[w0:w0 + limit]
    n = max(1, len(readings))
    envelopes = max(1, math.ceil(len(readings) / envelope))
    bank, table = DetectorBank(entries), JsonTable()
    for lo in range(0, len(warmup), envelope):
        bank.process(warmup[lo:lo + envelope], table)
    table.encoded_bytes = 0
    t_bank = 0
    for lo in range(0, len(readings), envelope):
        batch = readings[lo:lo + envelope]
        t0 = cpu_ns()
        bank.process(batch, table)
        t_bank += cpu_ns() - t0

    dets = {sid: build_detectors(e) for sid, e in entries.items()}
    for r in warmup:
        update_all(dets[r.sensor_id], r)
    t_det, written, split = 0, 0, 0
    last_cold: dict[str, dict[str, str]] = {}
    det_table = JsonTable()
    for lo in range(0, len(readings), envelope):
        batch = readings[lo:lo + envelope]
        t0 = cpu_ns()
        touched: dict[str, list[Any]] = {}
        for r in batch:
            d = dets[r.sensor_id]
            update_all(d, r)
            touched[r.sensor_id] = d
        for sid, d in touched.items():
            det_table[sid] = state_of(d)  # JSON-encoded, as the changelog does
        t_det += cpu_ns() - t0
        for sid in touched:  # untimed: what a split write would carry
            st = det_table[sid]
            size = len(json.dumps(st))
            written += size
            cold, parts = _cold_bytes(st)
            changed = sum(len(v) for k, v in parts.items() if last_cold.get(sid, {}).get(k) != v)
            last_cold[sid] = parts
            split += size - cold + changed

    dets = {sid: build_detectors(e) for sid, e in entries.items()}
    for r in warmup:
        update_all(dets[r.sensor_id], r)
    t0 = cpu_ns()
    for r in readings:
        update_all(dets[r.sensor_id], r)
    t_upd = cpu_ns() - t0
    return {"readings": len(readings), "envelope": envelope, "envelopes": envelopes,
            "bank_us_per_reading": t_bank / n / 1e3,
            "bank_state_bytes_per_envelope": table.encoded_bytes / envelopes,
            "detectors_us_per_reading": t_det / n / 1e3,
            "update_only_us_per_reading": t_upd / n / 1e3,
            "state_bytes_per_envelope": written / envelopes, "state_bytes_per_reading": written / n,
            "cold_keys": list(COLD_KEYS), "split_state_bytes_per_envelope": split / envelopes}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="typhoon_damrey", help="bundled scenario (NAME or NAME@PROFILE) to feed")
    ap.add_argument("--sensors-per-kind", type=int, default=2, help="sensors timed per kind (worst first)")
    ap.add_argument("--warm-h", type=float, default=24.0, help="hours of each series fed before timing starts")
    ap.add_argument("--bank-readings", type=int, default=60_000, help="readings through the DetectorBank stage")
    ap.add_argument("--envelope", type=int, default=ENVELOPE_READINGS, help="readings per envelope (bank stage)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "detectors.json")
    ap.add_argument("--label", default="", help="free text stored with the results (e.g. before/after)")
    args = ap.parse_args()

    began = time.perf_counter()
    sim = simulate(args.scenario)
    entries = sensor_entries(sim)
    by, every = readings_by_sensor(sim)
    chosen = pick_sensors(entries, by, args.sensors_per_kind)
    print(f"scenario {args.scenario}: {len(every)} valid readings, {len(entries)} sensors; "
          f"detectors from {Path(detectors.__file__).parent}; python {platform.python_version()}")
    gc.collect()
    gc.freeze()  # the simulation's ~10^5 readings are not the worker's heap: keep them out of every GC pass

    kinds: dict[str, Any] = {}
    for kind, sids in chosen.items():
        runs = []
        for sid in sids:
            rs = by[sid]
            runs.append((sid, time_sensor(entries[sid], rs, rs[0].ts.timestamp() + args.warm_h * 3600.0)))
        pooled = [x for _, r in runs for x in r["update_us"]]
        worst = max(runs, key=lambda x: x[1]["state_bytes_max"])[1]
        rules: dict[str, list[float]] = defaultdict(list)
        for _, r in runs:
            for rule, v in r["detectors"].items():
                if v["median_us"] is not None:
                    rules[rule].append(v["median_us"])
        med = statistics.median(pooled) if pooled else float("nan")
        kinds[kind] = {
            "sensors": [sid for sid, _ in runs],
            "interval_s": entries[sids[0]].interval_s,
            "detectors": [d.rule for d in build_detectors(entries[sids[0]])],
            "warm_readings": len(pooled),
            "median_us": med, "p99_us": quantile(pooled, 0.99) if pooled else float("nan"),
            "target_ratio": med / TARGET_US,
            "per_detector_median_us": {rule: statistics.median(v) for rule, v in rules.items()},
            **{k: worst[k] for k in ("state_bytes_end", "state_bytes_max", "state_bytes_msgspec", "state_bytes_per_rule",
                                     "to_state_us", "json_dumps_us", "json_loads_us", "msgspec_encode_us",
                                     "msgspec_decode_us", "build_and_restore_us")},
        }

    print(f"\nper reading, all detectors of one sensor (warm: after {args.warm_h:g} h); target {TARGET_US:g} µs median")
    print(f"{'kind':<12} {'n':>6} {'dets':>4} {'median':>8} {'p99':>8} {'/target':>8} {'state B':>8} {'max B':>7} "
          f"{'to_state':>8} {'json s+d':>8} {'msgspec':>8} {'restore':>8}")
    for kind, k in kinds.items():
        print(f"{kind:<12} {k['warm_readings']:>6} {len(k['detectors']):>4} {k['median_us']:>7.1f}µ {k['p99_us']:>7.1f}µ "
              f"{k['target_ratio']:>8.2f} {k['state_bytes_end']:>8} {k['state_bytes_max']:>7} {k['to_state_us']:>7.1f}µ "
              f"{k['json_dumps_us'] + k['json_loads_us']:>7.1f}µ {k['msgspec_encode_us'] + k['msgspec_decode_us']:>7.1f}µ "
              f"{k['build_and_restore_us']:>7.1f}µ")
    print("\nper detector, median µs per reading (state bytes at the end)")
    for kind, k in kinds.items():
        parts = ", ".join(f"{rule} {us:.1f} ({k['state_bytes_per_rule'].get(rule, 0)} B)"
                          for rule, us in sorted(k["per_detector_median_us"].items(), key=lambda x: -x[1]))
        print(f"  {kind:<12} {parts}")

    st = time_stages(entries, every, every[0].ts.timestamp() + args.warm_h * 3600.0, args.bank_readings, args.envelope)
    print(f"\ndetect stage over {st['readings']} readings of the scenario after the first {args.warm_h:g} h, "
          f"{st['envelope']}-reading envelopes, CPU µs/reading:")
    print(f"  DetectorBank.process (the worker's, JSON-encoding table)   {st['bank_us_per_reading']:6.1f}   "
          f"state {st['bank_state_bytes_per_envelope'] / 1e3:6.1f} kB/envelope")
    print(f"  update_all + state_of + json.dumps per touched sensor      {st['detectors_us_per_reading']:6.1f}   "
          f"state {st['state_bytes_per_envelope'] / 1e3:6.1f} kB/envelope ({st['state_bytes_per_reading']:.0f} B/reading)")
    print(f"  update_all alone                                           {st['update_only_us_per_reading']:6.1f}")
    print(f"  if {', '.join(COLD_KEYS)} were written only when changed: "
          f"{st['split_state_bytes_per_envelope'] / 1e3:.1f} kB/envelope")
    worst_kind = max(kinds, key=lambda k: kinds[k]["median_us"])
    print(f"worst kind: {worst_kind} {kinds[worst_kind]['median_us']:.1f} µs median = "
          f"{kinds[worst_kind]['target_ratio']:.2f} × the {TARGET_US:g} µs target")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"bench": "detectors", "version": 1, "label": args.label, "scenario": args.scenario,
              "target_us": TARGET_US, "warm_h": args.warm_h, "python": platform.python_version(),
              "machine": platform.machine(), "detectors_path": str(Path(detectors.__file__).parent),
              "at": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - began, 1),
              "kinds": kinds, "stages": st}
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"\nwrote {args.out} in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
