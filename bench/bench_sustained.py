"""The sustained rate of the real pipeline, its latency, and what each process spends per reading.

Starts its own local stack (``ioc.stack``; loopback only), one ``ioc worker`` and one ``ioc bridge``
on a fresh database and topics, and warms them up. Then:

1. **Sustained rate**, for two sensor cadences: one reading per sensor every 10 s (rate × 10
   sensors) and 10 Hz per sensor (rate ÷ 10 sensors). A load generator in its own process(es)
   publishes QoS 1 with paho, each reading stamped with its send time, at an offered rate for
   ``--hold`` seconds (60 s in a full run). A step **passes** when:
   - the generator offered ≥ 97 % of the rate and every message was PUBACKed;
   - every reading is visible in ``readings`` at most ``--drain-bound`` s (2 s, the issue's peer
     criterion) after the last publish: the lag at the end of the hold;
   - zero loss, counted row by row: every (sensor, ts, metric) the broker acknowledged is in
     ``readings``. A publish left without its PUBACK fails the step on its own line and is not
     counted as missing: the broker may never have had it, so it is not the pipeline's loss.
   The search doubles the rate from ``--start`` until a step fails, then bisects between the last
   pass and the first fail, at most ``--max-steps`` steps per cadence.
2. **Latency** at 500/s, 2k/s and the sustained rate (10 s cadence, background load for
   ``--latency-seconds``): sensor → row visible (a 20 ms poll of ``readings``; the figure is an
   upper bound within one poll) and sensor → alert on ``khanhhoa/v1/alerts/#`` (a probe gauge with
   Đồng Trăng's alarm levels reports 0.3 m above BĐ III; time until its ``opened`` alert arrives).
3. **CPU-seconds per 1k readings** per process tree (worker, bridge, Tansu, PostgreSQL with its
   backends, Mosquitto; the bench and its load generator are listed apart) and peak RSS, for every
   step and phase, from the first publish until the last row is visible.

Writes ``bench/results/sustained.json``; asserts nothing about timing.

    .venv/bin/python bench/bench_sustained.py [--quick] [--hold 60] [--cadences 10s,10Hz] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    END_ACK_WAIT_S,
    LOAD_KINDS,
    LOAD_SHAPE,
    MAX_ACK_WAIT_S,
    RESULTS_DIR,
    ArrivalTracker,
    BenchStack,
    CpuWindow,
    LoadGenerator,
    PipelineProcs,
    ProcWatch,
    StartedPids,
    quantiles,
    register_sensors,
    result_header,
    rows_by_key,
    set_active,
    short_tag,
    wait_until,
    write_result,
)

from ioc.domain import reading_topic
from ioc.mqtt_client import connect, make_client
from ioc.wire import encode_payload

console = Console(width=120)

CADENCES: dict[str, float] = {"10s": 10.0, "10Hz": 0.1}  # seconds between one sensor's readings
CODES = {"10s": "S", "10Hz": "F"}  # the cadence's letter in its sensor ids
LOAD_PREFIX = "SUS"  # every load sensor id starts with this; retired when a step does not use it
PROBE_PREFIX = "PRB"
PROBE_GAUGE = "HYD_DONG_TRANG"  # probe gauges take this gauge's alarm levels from the registry
PROBE_ABOVE_BD3_M = 0.3  # the integration tests' crossing (11.3 m against BĐ III 11.0 m)
MIN_OFFERED = 0.97


def _probe_levels() -> dict[str, float]:
    from sensors_sim.registry import load_registry

    spec = next(s for s in load_registry() if s.sensor_id == PROBE_GAUGE)
    assert spec.alarm_levels, f"{PROBE_GAUGE} has no alarm levels in the registry"
    return {k: float(v) for k, v in spec.alarm_levels.items() if v is not None}


@dataclass
class SensorPool:
    """Load sensors per step, registered as needed; only the current step's are active.

    Every step gets sensors of its own (a new generation in their ids). Reused sensors would have
    paused between two steps, longer than their silence threshold at a 10 s cadence, and the next
    step would begin with every one of them judged silent and then resumed: an alert storm that
    is not what the step measures (``bench_alert_storm.py`` measures storms).
    """

    db: str
    refresh_s: float
    generation: int = 0
    active: tuple[str, ...] = ()

    @staticmethod
    def ids(code: str, n: int, generation: int = 0) -> list[str]:
        return [f"{LOAD_PREFIX}{CODES[code]}{LOAD_KINDS[i % len(LOAD_KINDS)][0].upper()}{generation:03d}{i:06d}"
                for i in range(n)]

    @staticmethod
    def registry_interval(code: str) -> int | None:
        """The registry's reporting interval (whole seconds) for a cadence; none below a second."""
        period = CADENCES[code]
        return int(period) if period >= 1 and float(period).is_integer() else None

    @staticmethod
    def kind_of(sensor_id: str) -> str:
        return {k[0].upper(): k for k in LOAD_KINDS}[sensor_id[len(LOAD_PREFIX) + 1]]

    def use(self, code: str, n: int) -> list[str]:
        self.generation += 1
        ids = self.ids(code, n, self.generation)
        register_sensors(self.db, [(s, self.kind_of(s), None) for s in ids], self.registry_interval(code))
        set_active(self.db, LOAD_PREFIX, ids)
        self.active = tuple(ids)
        time.sleep(self.refresh_s + 1.5)  # bridge and worker reload the registry every refresh_s
        return ids


class AlertProbe:
    """Publishes probe readings above BĐ III and times their ``opened`` alerts on MQTT."""

    def __init__(self, mqtt_url: str, probes: list[str], bd3: float) -> None:
        self.probes = probes
        self.bd3 = bd3
        self.next = 0
        self.sent: dict[str, float] = {}
        self.got: dict[str, float] = {}
        self.outboxed: dict[str, float] = {}  # the notification's created_at: the alert's commit
        self.lock = threading.Lock()
        self.sub, target, props = make_client(mqtt_url, client_id=f"bench-alerts-{uuid.uuid4().hex[:8]}")
        self.sub.on_connect = lambda c, u, f, rc, p: c.subscribe("khanhhoa/v1/alerts/#", qos=1)
        self.sub.on_message = self._on_message
        connect(self.sub, target, props)
        self.sub.loop_start()
        self.pub, target, props = make_client(mqtt_url, client_id=f"bench-probe-{uuid.uuid4().hex[:8]}")
        connect(self.pub, target, props)
        self.pub.loop_start()

    def _on_message(self, c: object, u: object, m: Any) -> None:
        t = time.time()
        if not m.payload:
            return
        try:
            body = json.loads(m.payload)
            sid = body["alert"]["sensor_id"]
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            if body.get("event") == "opened" and sid in self.sent and sid not in self.got:
                self.got[sid] = t
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    self.outboxed[sid] = datetime.fromisoformat(body["created_at"]).timestamp()

    def fire(self) -> bool:
        if self.next >= len(self.probes):
            return False
        sid = self.probes[self.next]
        self.next += 1
        t = time.time()
        payload = encode_payload(sid, datetime.fromtimestamp(t, UTC), 1,
                                 {"water_level_m": round(self.bd3 + PROBE_ABOVE_BD3_M, 2)})
        with self.lock:
            self.sent[sid] = t
        self.pub.publish(reading_topic("water_level", sid), payload, qos=1)
        return True

    def latencies_ms(self, sids: list[str]) -> list[float]:
        with self.lock:
            return [(self.got[s] - self.sent[s]) * 1000.0 for s in sids if s in self.got]

    def split_ms(self, sids: list[str]) -> dict[str, list[float]]:
        """Where the alert's time goes: publish → alert committed with its outbox rows, then → on MQTT."""
        with self.lock:
            done = [s for s in sids if s in self.got and s in self.outboxed]
            return {"to_outbox": [(self.outboxed[s] - self.sent[s]) * 1000.0 for s in done],
                    "outbox_to_mqtt": [(self.got[s] - self.outboxed[s]) * 1000.0 for s in done]}

    def stop(self) -> None:
        for c in (self.sub, self.pub):
            c.loop_stop()
            c.disconnect()


def _probe_main(conn: Connection, mqtt_url: str, probes: list[str], bd3: float) -> None:
    """The probe's own process: the bench's process polls the database and reads the load
    generators' samples, and paho's threads in it waited for the GIL (outliers of 200 ms and more
    in the alerts' arrival times that were the bench's, not the pipeline's)."""
    probe = AlertProbe(mqtt_url, probes, bd3)
    try:
        conn.send("ready")
        while True:
            cmd, arg = conn.recv()
            if cmd == "fire":
                conn.send(probe.fire())
            elif cmd == "latencies":
                conn.send(probe.latencies_ms(arg))
            elif cmd == "split":
                conn.send(probe.split_ms(arg))
            else:
                break
    finally:
        probe.stop()


class ProbeProcess:
    """:class:`AlertProbe` in a process of its own, with the same calls."""

    def __init__(self, mqtt_url: str, probes: list[str], bd3: float) -> None:
        self.probes = probes
        self.next = 0
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_probe_main, args=(child, mqtt_url, probes, bd3), daemon=True)
        self.proc.start()
        if not self.conn.poll(30) or self.conn.recv() != "ready":
            raise RuntimeError("the alert probe process did not start")

    def _ask(self, cmd: str, arg: Any = None) -> Any:
        self.conn.send((cmd, arg))
        return self.conn.recv()

    def fire(self) -> bool:
        fired = bool(self._ask("fire"))
        self.next += fired
        return fired

    def latencies_ms(self, sids: list[str]) -> list[float]:
        return list(self._ask("latencies", sids))

    def split_ms(self, sids: list[str]) -> dict[str, list[float]]:
        return dict(self._ask("split", sids))

    def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError):
            self.conn.send(("stop", None))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


class Bench:
    def __init__(self, args: argparse.Namespace, stack: BenchStack, pipe: PipelineProcs, watch: ProcWatch,
                 pids: StartedPids, probe: ProbeProcess | None) -> None:
        self.args = args
        self.stack = stack
        self.pipe = pipe
        self.watch = watch
        self.pids = pids
        self.probe = probe
        self.pool = SensorPool(pipe.db, float(pipe.env["IOC_REGISTRY_REFRESH_S"]))
        self.deadline = time.monotonic() + args.budget

    def run_load(self, code: str, rate: float, seconds: float, probes: int = 0,
                 poll_ms: float | None = None) -> dict[str, Any]:
        """Offer ``rate`` readings/s for ``seconds`` from ``rate × period`` sensors; measure everything."""
        a = self.args
        period = CADENCES[code]
        sensors = self.pool.use(code, max(1, round(rate * period)))
        kinds = [self.pool.kind_of(s) for s in sensors]
        tracker = ArrivalTracker(self.pipe.db, f"{LOAD_PREFIX}{CODES[code]}%", (poll_ms or a.poll_ms) / 1000.0,
                                 a.sample)
        tracker.start()
        tracker.connected.wait(10)
        if tracker.backend_pid is not None:  # its polls are the bench's CPU, not PostgreSQL's share
            self.watch.also("bench", tracker.backend_pid)
        cpu = CpuWindow(self.watch).begin()
        gen = LoadGenerator(self.stack.urls["IOC_MQTT_URL"], sensors, kinds, rate, seconds, tracker.add, self.pids,
                            processes=1 + int(rate // 4000)).start()
        fired: list[str] = []
        try:
            if probes and self.probe is not None:
                time.sleep(2.5)  # generators start ~2 s after spawning
                gap = max(0.2, (seconds - 1.0) / probes)
                for _ in range(probes):
                    if self.probe.fire():
                        fired.append(self.probe.probes[self.probe.next - 1])
                    time.sleep(gap)
            res = gen.wait(seconds + 60 + END_ACK_WAIT_S)
            tracker.forget(res.unacked)  # the pipeline is judged on what the broker acknowledged
            end = res.last_publish_us / 1e6

            def drained() -> bool:
                self.pipe.check()
                if tracker.error is not None:
                    raise RuntimeError(f"arrival tracker failed: {tracker.error!r}")
                return tracker.seen >= tracker.tracked

            complete = wait_until(drained, a.drain_timeout, 0.05)
            t_sampled = max(tracker.arrived.values(), default=end)
            # The sample is drained: now count every row of every reading; recount until none is
            # missing or the drain timeout is spent. The drain is the later of the two moments.
            keys = tracker.keys()
            expected = {k: len(LOAD_SHAPE[self.pool.kind_of(k[0])]) for k in keys}
            like = f"{LOAD_PREFIX}{CODES[code]}%"
            deadline = end + a.drain_timeout
            t_rows = time.time()
            missing = self._missing(like, expected)
            recounted = False
            while complete and missing and time.time() < deadline:
                time.sleep(0.25)
                t_rows = time.time()
                missing = self._missing(like, expected)
                recounted = True
            used = cpu.end()
            probe = self.probe
            if fired and probe is not None:
                wait_until(lambda: len(probe.latencies_ms(fired)) >= len(fired), 15)
        finally:
            tracker.stop()
            if tracker.backend_pid is not None:
                self.watch.drop("bench", tracker.backend_pid)
        drain_s = (max(t_sampled, t_rows) if recounted else t_sampled) - end if complete else float("inf")
        lags = [lag for t, lag in tracker.lags if t <= end]
        out: dict[str, Any] = {
            "offered_rate": rate, "cadence": code, "sensors": len(sensors), "seconds": seconds,
            "published": res.published, "acked": res.acked, "achieved_rate": round(res.published / res.seconds, 1),
            "unacked_readings": len(res.unacked), "mids_reused": res.mids_reused,
            "generator_ack_wait_s": res.ack_wait_s, "generator_stalled": res.stalled,
            "generator_processes": len(gen.parts), "generator_max_late_ms": res.max_late_ms,
            "drain_s": round(drain_s, 3) if drain_s != float("inf") else None,
            "drained_within_timeout": complete, "missing_rows": missing,
            "max_lag_during_hold_s": round(max(lags, default=0.0), 3),
            "row_latency_ms": quantiles(tracker.latencies_ms()), "latency_sample": f"1 in {a.sample}",
            "cpu_s": {k: round(v, 3) for k, v in used.items()},
            "cpu_s_per_1k_readings": cpu.per_1k(res.published),
            "rss_peak_mb": self.watch.peaks(),
        }
        # The same offered load costs the bench's own processes the same work, so this ratio stays put
        # while the machine's speed swings (±20 % between runs here): compare A/B runs of one rate by it.
        if used.get("bench"):
            out["pipeline_cpu_per_bench_cpu"] = round(sum(v for k, v in used.items() if k != "bench") / used["bench"], 3)
        if fired and self.probe is not None:
            out["alert_latency_ms"] = quantiles(self.probe.latencies_ms(fired))
            out["alert_latency_split_ms"] = {k: quantiles(v) for k, v in self.probe.split_ms(fired).items()}
            out["alert_probes"] = len(fired)
        reasons = []
        if res.published < MIN_OFFERED * rate * seconds or out["achieved_rate"] < MIN_OFFERED * rate:
            reasons.append(f"generator offered {out['achieved_rate']:,.0f}/s")
        if res.stalled:
            reasons.append(f"the broker acknowledged nothing for {MAX_ACK_WAIT_S:.0f} s: the generator stopped")
        if res.unacked:  # acked is published minus these
            reasons.append(f"{len(res.unacked)} not PUBACKed (not counted as missing)")
        if not complete or drain_s > a.drain_bound:
            reasons.append("drain " + (f"{drain_s:.2f} s" if complete else f"> {a.drain_timeout:.0f} s"))
        if missing:
            reasons.append(f"{missing} rows missing")
        out["passed"] = not reasons
        out["reason"] = "; ".join(reasons) or "ok"
        if missing or not complete:
            out["settled_after_s"] = self._settle(like, expected)
        if res.unacked:  # at least once: the broker may have taken a publish whose PUBACK never came
            lost = {k: len(LOAD_SHAPE[self.pool.kind_of(k[0])]) for k in res.unacked}
            out["unacked_rows_stored"] = sum(lost.values()) - self._missing(like, lost)
        return out

    def _settle(self, like: str, expected: dict[tuple[str, int], int], timeout_s: float = 300.0) -> float | None:
        """After a step that fell behind, wait until its backlog is stored before the next step or phase
        starts: one measured on top of another's backlog would fail (or be slow) for that alone."""
        t0 = time.time()
        while time.time() - t0 < timeout_s:
            self.pipe.check()
            if not self._missing(like, expected):
                return round(time.time() - t0, 1)
            time.sleep(2.0)
        console.print(f"[yellow]backlog not stored {timeout_s:.0f} s after the step; going on[/]")
        return None

    def _missing(self, like: str, expected: dict[tuple[str, int], int]) -> int:
        if not expected:
            return 0
        found = rows_by_key(self.pipe.db, like, min(k[1] for k in expected), max(k[1] for k in expected))
        return sum(max(0, n - found.get(k, 0)) for k, n in expected.items())

    def search(self, code: str, start: float) -> dict[str, Any]:
        a = self.args
        steps: list[dict[str, Any]] = []
        best: float | None = None
        fail: float | None = None
        rate = start
        stopped = "max steps"
        while len(steps) < a.max_steps:
            if time.monotonic() + a.hold + 30 > self.deadline:
                stopped = "time budget"
                break
            step = self.run_load(code, rate, a.hold, poll_ms=a.step_poll_ms)
            steps.append(step)
            console.print(f"  {code} {rate:>8,.0f}/s: {'PASS' if step['passed'] else 'FAIL'} ({step['reason']});"
                          f" drain {step['drain_s']} s, row p99 {step['row_latency_ms']['p99']} ms,"
                          f" cpu/1k {step['cpu_s_per_1k_readings'].get('total_pipeline')}")
            if step["passed"]:
                best = rate
            else:
                fail = rate
                if not step["drained_within_timeout"]:
                    stopped = "backlog did not clear"
                    break
            if fail is None:
                rate = rate * 2
                if rate > a.max_rate:
                    stopped = "max rate"
                    break
            elif best is None:
                rate = max(a.min_rate, rate / 2)
                if rate == a.min_rate and steps[-1]["offered_rate"] == a.min_rate:
                    stopped = "min rate"
                    break
            else:
                if fail - best <= max(100.0, 0.1 * best):
                    stopped = "converged"
                    break
                rate = round((best + fail) / 2 / 50) * 50
            time.sleep(2.0)
        return {"cadence": code, "seconds_between_readings": CADENCES[code], "sustained_rate": best or 0.0,
                "first_failing_rate": fail, "search_stopped": stopped, "hold_s": a.hold, "steps": steps}


def run(args: argparse.Namespace) -> dict[str, Any]:
    pids = StartedPids()
    data = result_header("sustained", args.quick, sys.argv)
    data.update(hold_s=args.hold, drain_bound_s=args.drain_bound, poll_ms=args.poll_ms, step_poll_ms=args.step_poll_ms,
                criteria=(f"offered >= {MIN_OFFERED:.0%} of the rate, all PUBACKed, every reading visible "
                          f"<= {args.drain_bound} s after the last publish, zero rows missing"),
                note=("hold shortened for a quick run; the issue's criterion is 60 s" if args.hold < 60 else ""),
                settings=dict(args.set), latency_cadence=args.latency_cadence, started_pids=pids.items, cadences={}, latency={})
    t_all = time.perf_counter()
    tag = short_tag()
    levels = _probe_levels()
    probe: ProbeProcess | None = None
    watch: ProcWatch | None = None
    with BenchStack("sustained", pids) as stack:
        pipe = PipelineProcs(stack, stack.new_database(tag), tag, pids,
                             IOC_REGISTRY_REFRESH_S=str(args.registry_refresh), **dict(args.set))
        try:
            n_probes = args.probes * len(args.latency_rates + [0])
            probes = [f"{PROBE_PREFIX}{tag.upper()}{k:04d}" for k in range(n_probes)]
            register_sensors(pipe.db, [(p, "water_level", levels) for p in probes])
            pipe.start()
            watch = stack.watch()
            watch.add("worker", pipe.pid("worker"))
            watch.add("bridge", pipe.pid("bridge"))
            watch.add("bench", os.getpid())
            watch.start()
            # A reading through every partition: a partition's first record ever is claimed through the
            # offset guard's slow path (it reads the broker's offset-0 record), 100-300 ms once per
            # partition in a deployment's life, which the first phase would otherwise measure.
            warm = pipe.warm_up_all(rounds=1)
            console.print(f"pipeline warm after {warm:.1f} s")
            data["warm_up_s"] = round(warm, 1)
            probe = ProbeProcess(stack.urls["IOC_MQTT_URL"], probes, levels["bd3"])
            bench = Bench(args, stack, pipe, watch, pids, probe)
            for code in args.cadences:
                console.print(f"[bold]search, one reading per sensor every {CADENCES[code]:g} s[/]")
                start = args.start if code == "10s" else max(args.min_rate, args.start / 2)
                data["cadences"][code] = bench.search(code, start)
            sustained = data["cadences"].get("10s", {}).get("sustained_rate", 0.0)
            rates = sorted({*args.latency_rates, *([sustained] if sustained else [])})
            for rate in rates:
                console.print(f"[bold]latency at {rate:,.0f}/s[/] ({args.latency_cadence} cadence, {args.latency_seconds:.0f} s)")
                phase = bench.run_load(args.latency_cadence, rate, args.latency_seconds, probes=args.probes)
                phase["is_sustained_rate"] = rate == sustained
                data["latency"][f"{rate:.0f}"] = phase
                console.print(f"  rows {phase['row_latency_ms']}, alerts {phase.get('alert_latency_ms')}"
                              f" = {phase.get('alert_latency_split_ms')}")
        finally:
            if probe is not None:
                probe.stop()
            if watch is not None:
                watch.stop()
            pipe.stop()
    data["seconds"] = round(time.perf_counter() - t_all, 1)
    return data


def print_tables(data: dict[str, Any]) -> None:
    for c in data["cadences"].values():
        t = Table(title=f"Sustained-rate search, one reading per sensor every {c['seconds_between_readings']:g} s,"
                        f" hold {c['hold_s']:g} s: sustained {c['sustained_rate']:,.0f} readings/s"
                        f" ({c['search_stopped']})")
        for col in ("offered/s", "sensors", "achieved/s", "drain s", "missing", "row p50/p99/max ms",
                    "CPU-s/1k", "result"):
            t.add_column(col, justify="right")
        for s in c["steps"]:
            q = s["row_latency_ms"]
            t.add_row(f"{s['offered_rate']:,.0f}", f"{s['sensors']:,}", f"{s['achieved_rate']:,.0f}",
                      f"{s['drain_s']}", f"{s['missing_rows']:,}", f"{q['p50']:.0f}/{q['p99']:.0f}/{q['max']:.0f}",
                      f"{s['cpu_s_per_1k_readings'].get('total_pipeline', 0):.3f}",
                      "PASS" if s["passed"] else f"FAIL: {s['reason']}")
        console.print(t)
    if data["latency"]:
        cadence = data.get("latency_cadence", "10s")
        t = Table(title=f"Latency with background load ({cadence} cadence); ms, p50 / p99 / max (n)")
        for col in ("rate/s", "sensor → row visible", "sensor → alert on MQTT", "CPU-s per 1k readings, by process"):
            t.add_column(col, justify="left" if col.startswith("CPU") else "right")
        for rate, p in data["latency"].items():
            q, al = p["row_latency_ms"], p.get("alert_latency_ms", {"n": 0})
            cpu = p["cpu_s_per_1k_readings"]
            t.add_row(f"{float(rate):,.0f}" + (" (sustained)" if p.get("is_sustained_rate") else ""),
                      f"{q['p50']:.0f} / {q['p99']:.0f} / {q['max']:.0f} ({q['n']:,})",
                      f"{al['p50']:.0f} / {al['p99']:.0f} / {al['max']:.0f} ({al['n']})" if al["n"] else "none",
                      ", ".join(f"{k} {v:.3f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
                      + (f"; pipeline / bench CPU {p['pipeline_cpu_per_bench_cpu']}" if "pipeline_cpu_per_bench_cpu" in p else ""))
        console.print(t)


def setting(text: str) -> tuple[str, str]:
    """``--set IOC_NAME=VALUE``: a worker/bridge setting for the run (compare configurations)."""
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("IOC_"):
        raise argparse.ArgumentTypeError(f"expected IOC_NAME=VALUE, got {text!r}")
    return name, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: hold 5 s, 2 steps per cadence, 6 s latency phases (not the issue's 60 s hold)")
    ap.add_argument("--hold", type=float, default=None, help="seconds each step is held (default 60; --quick 5)")
    ap.add_argument("--drain-bound", type=float, default=2.0,
                    help="a step passes only if every reading is visible this long after the last publish")
    ap.add_argument("--drain-timeout", type=float, default=None,
                    help="how long to wait for a backlog before counting rows (default 60; --quick 20)")
    ap.add_argument("--start", type=float, default=None, help="first offered rate, 10 s cadence (10 Hz starts at half)")
    ap.add_argument("--min-rate", type=float, default=100.0)
    ap.add_argument("--max-rate", type=float, default=32_000.0)
    ap.add_argument("--max-steps", type=int, default=None, help="steps per cadence (default 4; --quick 2)")
    ap.add_argument("--cadences", default="10s,10Hz", help="comma-separated: 10s (a reading every 10 s), 10Hz")
    ap.add_argument("--latency-rates", default="500,2000", help="rates for the latency phases (plus the sustained one)")
    ap.add_argument("--latency-cadence", default="10s", choices=sorted(CADENCES),
                    help="sensor cadence of the latency phases' background load (default 10s)")
    ap.add_argument("--latency-seconds", type=float, default=None, help="per latency phase (default 30; --quick 6)")
    ap.add_argument("--probes", type=int, default=None, help="alert probes per latency phase (default 20; --quick 3)")
    ap.add_argument("--poll-ms", type=float, default=20.0, help="arrival poll interval (the latency resolution)")
    ap.add_argument("--step-poll-ms", type=float, default=100.0,
                    help="the same in the rate search, where a finer poll of a stack behind takes its CPU")
    ap.add_argument("--sample", type=int, default=10,
                    help="latency is tracked on readings whose ts in µs is divisible by this (1 = all)")
    ap.add_argument("--registry-refresh", type=float, default=None,
                    help="IOC_REGISTRY_REFRESH_S of the bench's worker and bridge (default 10; --quick 2)")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds for the whole search; it stops early when exceeded (default 840; --quick 100)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where sustained.json goes")
    ap.add_argument("--set", action="append", default=[], type=setting, metavar="IOC_NAME=VALUE",
                    help="a setting for the bench's worker and bridge, to compare configurations (repeatable)")
    args = ap.parse_args()
    q = args.quick
    args.hold = args.hold or (5.0 if q else 60.0)
    args.drain_timeout = args.drain_timeout or (20.0 if q else 60.0)
    args.start = args.start or (500.0 if q else 1000.0)
    args.max_steps = args.max_steps or (2 if q else 4)
    args.latency_seconds = args.latency_seconds or (6.0 if q else 30.0)
    args.probes = args.probes if args.probes is not None else (3 if q else 20)
    args.registry_refresh = args.registry_refresh or (2.0 if q else 10.0)
    args.budget = args.budget or (100.0 if q else 840.0)
    args.cadences = [c.strip() for c in args.cadences.split(",") if c.strip()]
    args.latency_rates = [float(r) for r in args.latency_rates.split(",") if r.strip()]
    if not set(args.cadences) <= set(CADENCES):
        ap.error(f"--cadences: choose from {list(CADENCES)}")
    data = run(args)
    print_tables(data)
    path = write_result(args.out, "sustained", data)
    console.print(f"wrote {path} in {data['seconds']:.0f} s")


if __name__ == "__main__":
    main()
