"""Raw limits of each hop on this machine, in one run, so the pipeline's figures have a yardstick.

Starts its own local stack (``ioc.stack``: Mosquitto, Tansu, PostgreSQL; loopback only) and measures:

- **paho QoS 0 and QoS 1 pub→sub** through the local Mosquitto: a publisher in this process, a
  subscriber in its own process; rate = messages received ÷ (last received − first published);
- **aiokafka produce** to Tansu (acks=all, linger 5 ms, 8 partitions, one reading per record, and
  envelopes of 50 readings) and **consume** of the one-reading records (manual assignment, getmany);
- **a bare Faust counting agent** (a tiny app in its own process, same Tansu, same fetch-wait cap as
  the worker): a backlog is produced first and the agent counts it from its first record to its
  last. Tansu takes ~30 s to give a new group its partitions; that wait overlaps the other hops
  and is not in the figure (the agent waits for a go-file before it starts counting);
- **the Kafka hop's latency against the consumer's fetch wait** (``kafka_wait``): a record every
  20 ms over 8 partitions, each timed from its send to its arrival at a consumer with that
  ``fetch_max_wait_ms``. Tansu answers a waiting fetch well before the wait is over but not at
  once, so this is the floor of the worker's ``consumer_fetch_max_wait_ms`` trade-off;
- **PostgreSQL binary COPY** into a table shaped like ``readings`` (same columns, unique key and
  index), in transactions of ``--copy-batch`` rows and in one transaction.

Every hop is also given in readings/s (the load shape has 2.33 rows per reading), and the slowest
one is named. Writes ``bench/results/raw.json``; asserts nothing about timing.

    .venv/bin/python bench/bench_raw.py [--quick] [--n 50000] [--hops mqtt,kafka,faust,copy] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    LOAD_KINDS,
    RESULTS_DIR,
    ROWS_PER_READING,
    BenchStack,
    StartedPids,
    _load_values,
    quantiles,
    result_header,
    short_tag,
    wait_until,
    write_result,
)

from ioc.domain import reading_topic
from ioc.mqtt_client import connect, make_client
from ioc.stack.process import log_tail, stop_pid
from ioc.wire import Reading, encode_envelope, encode_payload

console = Console(width=120)
PARTITIONS = 8  # IOC_KAFKA_PARTITIONS' default, as the pipeline runs
HOPS = ("mqtt", "kafka", "kafka_wait", "faust", "copy")
FETCH_WAITS_MS = (10, 30, 50, 100)  # the worker's default is 100


def _payloads(n_sensors: int) -> list[tuple[str, bytes]]:
    now = datetime.now(UTC)
    out = []
    for i in range(n_sensors):
        kind = LOAD_KINDS[i % len(LOAD_KINDS)]
        sid = f"RAW_{kind[:3].upper()}_{i:05d}"
        out.append((reading_topic(kind, sid), encode_payload(sid, now, i, _load_values(kind, i, 0))))
    return out


# -- MQTT pub→sub ---------------------------------------------------------------------------------------


def _subscriber(url: str, topic: str, qos: int, n: int, timeout_s: float, conn: Connection) -> None:
    """Child process: count messages; report (count, first, last) wall times after n or 2 s of silence."""
    client, target, props = make_client(url, client_id=f"bench-rawsub-{uuid.uuid4().hex[:8]}")
    count = 0
    first = last = 0.0
    done = threading.Event()

    def on_message(c: object, u: object, m: object) -> None:
        nonlocal count, first, last
        last = time.time()
        if count == 0:
            first = last
        count += 1
        if count >= n:
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda c, u, mid, rcs, p: conn.send("ready")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=qos)
    connect(client, target, props)
    client.loop_start()
    deadline = time.monotonic() + timeout_s
    seen = -1
    while not done.is_set() and time.monotonic() < deadline:
        done.wait(2.0)
        if count and count == seen:
            break  # nothing new for 2 s: the rest is not coming
        seen = count
    client.loop_stop()
    client.disconnect()
    conn.send((count, first, last))
    conn.close()


def mqtt_pubsub(url: str, qos: int, n: int, timeout_s: float, pids: StartedPids) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    root = f"benchraw{qos}{uuid.uuid4().hex[:4]}"
    sub = ctx.Process(target=_subscriber, args=(url, f"{root}/#", qos, n, timeout_s, child), daemon=True)
    sub.start()
    pids.add(f"mqtt-sub-qos{qos}", sub.pid or 0)
    child.close()
    try:
        if not parent.poll(30) or parent.recv() != "ready":
            raise RuntimeError("raw MQTT subscriber did not subscribe")
        msgs = [(f"{root}/{t}", p) for t, p in _payloads(300)]
        client, target, props = make_client(url, client_id=f"bench-rawpub-{uuid.uuid4().hex[:8]}",
                                            max_inflight=1000)
        acked = 0

        def on_publish(c: object, u: object, mid: int, rc: object, p: object) -> None:
            nonlocal acked
            acked += 1

        client.on_publish = on_publish
        connect(client, target, props)
        client.loop_start()
        try:
            t_first = time.time()
            t0 = time.perf_counter()
            for i in range(n):
                topic, payload = msgs[i % len(msgs)]
                client.publish(topic, payload, qos=qos)
            wait_until(lambda: acked >= n, timeout_s, 0.01)
            pub_s = time.perf_counter() - t0
        finally:
            client.loop_stop()
            client.disconnect()
        if not parent.poll(timeout_s + 10):
            raise RuntimeError("raw MQTT subscriber sent no result")
        count, _first, last = parent.recv()
        elapsed = max(1e-9, last - t_first)
        return {"messages": n, "received": count, "seconds": round(elapsed, 3), "per_s": round(count / elapsed),
                "publish_side_per_s": round(n / pub_s), "readings_per_s": round(count / elapsed)}
    finally:
        sub.join(timeout=10)
        if sub.is_alive():
            sub.kill()
            sub.join(5)
        parent.close()


# -- Kafka (Tansu) produce / consume ----------------------------------------------------------------------


async def _create_topics(kafka_url: str, topics: list[str]) -> None:
    from streams.kafka_admin import ensure_topics

    await ensure_topics(kafka_url, dict.fromkeys(topics, PARTITIONS))


async def _produce(kafka_url: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Seconds to produce every record with acks=all and wait for the last ack."""
    from aiokafka import AIOKafkaProducer

    from streams.topics import bootstrap_servers

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers(kafka_url), acks="all", linger_ms=5,
                                max_batch_size=256 * 1024, enable_idempotence=False)
    await producer.start()
    try:
        t0 = time.perf_counter()
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic, value, key=key))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures = []
        await asyncio.gather(*futures)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


async def _consume(kafka_url: str, topic: str, n: int, timeout_s: float) -> tuple[int, float]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.topics import bootstrap_servers

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers(kafka_url), enable_auto_commit=False,
                                fetch_max_wait_ms=100, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        got = 0
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        while got < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            got += sum(len(v) for v in batch.values())
        return got, time.perf_counter() - t0
    finally:
        await consumer.stop()


def _records(n: int, per_record: int) -> list[tuple[bytes, bytes]]:
    """n readings as records of ``per_record`` readings (1: bare payloads; more: envelopes), keyed by sensor."""
    now = datetime.now(UTC)
    out = []
    for start in range(0, n, per_record):
        readings = []
        for i in range(start, min(n, start + per_record)):
            kind = LOAD_KINDS[i % len(LOAD_KINDS)]
            sid = f"RAW_{kind[:3].upper()}_{i % 3000:05d}"
            readings.append((sid, kind, now + timedelta(microseconds=i), i, _load_values(kind, i, 0)))
        if per_record == 1:
            sid, _kind, ts, seq, metrics = readings[0]
            out.append((sid.encode(), encode_payload(sid, ts, seq, metrics)))
        else:
            env = [Reading(sid, kind, ts, seq, metrics) for sid, kind, ts, seq, metrics in readings]
            out.append((readings[0][0].encode(), encode_envelope(env)))
    return out


def kafka_hops(kafka_url: str, n: int, timeout_s: float) -> dict[str, dict[str, Any]]:
    tag = uuid.uuid4().hex[:6]
    one, env = f"bench-raw-one-{tag}", f"bench-raw-env-{tag}"
    asyncio.run(_create_topics(kafka_url, [one, env]))
    records = _records(n, 1)
    nbytes = sum(len(v) for _, v in records)
    secs = asyncio.run(_produce(kafka_url, one, records))
    out: dict[str, dict[str, Any]] = {
        "kafka_produce": {"records": n, "readings_per_record": 1, "seconds": round(secs, 3),
                          "per_s": round(n / secs), "readings_per_s": round(n / secs),
                          "mb_per_s": round(nbytes / secs / 2**20, 2), "acks": "all"},
    }
    envelopes = _records(n, 50)
    secs = asyncio.run(_produce(kafka_url, env, envelopes))
    out["kafka_produce_envelopes"] = {"records": len(envelopes), "readings_per_record": 50,
                                      "seconds": round(secs, 3), "per_s": round(len(envelopes) / secs),
                                      "readings_per_s": round(n / secs), "acks": "all"}
    got, secs = asyncio.run(_consume(kafka_url, one, n, timeout_s))
    out["kafka_consume"] = {"records": n, "received": got, "seconds": round(secs, 3), "per_s": round(got / secs),
                            "readings_per_s": round(got / secs)}
    return out


async def _hop_latency(kafka_url: str, topic: str, wait_ms: int, n: int, gap_s: float) -> list[float]:
    """Send ``n`` records ``gap_s`` apart round the partitions; ms from each send to its arrival."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from streams.topics import bootstrap_servers

    servers = bootstrap_servers(kafka_url)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=0, enable_idempotence=False)
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, fetch_max_wait_ms=wait_ms)
    await producer.start()
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        ages: list[float] = []

        async def send() -> None:
            for i in range(n):
                await producer.send(topic, str(time.time()).encode(), partition=i % PARTITIONS)
                await asyncio.sleep(gap_s)

        async def receive() -> None:
            while len(ages) < n:
                got = await consumer.getmany(timeout_ms=1000)
                now = time.time()
                ages.extend((now - float(m.value)) * 1000.0 for ms in got.values() for m in ms)

        await asyncio.wait_for(asyncio.gather(send(), receive()), n * gap_s + 30.0)
        return ages
    finally:
        await producer.stop()
        await consumer.stop()


def kafka_wait_hops(kafka_url: str, n: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for wait_ms in FETCH_WAITS_MS:
        topic = f"bench-raw-wait-{uuid.uuid4().hex[:6]}"
        asyncio.run(_create_topics(kafka_url, [topic]))
        ages = asyncio.run(_hop_latency(kafka_url, topic, wait_ms, n, 0.02))
        out[f"kafka_hop_wait_{wait_ms}ms"] = {"fetch_max_wait_ms": wait_ms, "records": n, "send_gap_ms": 20,
                                              "latency_ms": quantiles(ages)}
    return out


# -- a bare Faust counting agent ----------------------------------------------------------------------------


def _faust_child(kafka_url: str, topic: str, n: int, datadir: str, go_file: str) -> None:
    """Child process: a Faust app whose one agent counts records; prints ``done <first> <last> <count>``."""
    import faust

    from streams.faust_compat import cap_fetch_wait

    cap_fetch_wait(100)  # as the worker does (IOC_CONSUMER_FETCH_MAX_WAIT_MS' default)
    app = faust.App(f"bench-raw-faust-{uuid.uuid4().hex[:6]}", broker=kafka_url, store="memory://",
                    datadir=datadir, value_serializer="raw", key_serializer="raw", web_enabled=False,
                    topic_partitions=PARTITIONS, topic_replication_factor=1,
                    consumer_auto_offset_reset="earliest", broker_commit_interval=1.0)
    source = app.topic(topic, value_type=bytes, partitions=PARTITIONS)

    @app.agent(source)
    async def count(stream: Any) -> None:
        while not os.path.exists(go_file):
            await asyncio.sleep(0.05)
        k = 0
        first = 0.0
        async for _value in stream:
            if k == 0:
                first = time.time()
            k += 1
            if k == n:
                print(f"done {first} {time.time()} {k}", flush=True)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


class FaustHop:
    """Started first (its group's assignment takes ~30 s); measured last."""

    def __init__(self, kafka_url: str, n: int, base: Path, pids: StartedPids) -> None:
        self.n = n
        self.topic = f"bench-raw-faust-{uuid.uuid4().hex[:6]}"
        self.go = base / "faust.go"
        self.log = base / "faust.log"
        asyncio.run(_create_topics(kafka_url, [self.topic]))
        self.produce_s = asyncio.run(_produce(kafka_url, self.topic, _records(n, 1)))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--_faust", kafka_url, self.topic, str(n), str(base / "faust"), str(self.go)],
            stdout=subprocess.PIPE, stderr=open(self.log, "wb"), text=True,
            start_new_session=True,
        )
        pids.add("faust-agent", self.proc.pid)

    def measure(self, timeout_s: float) -> dict[str, Any]:
        self.go.touch()
        line: list[str] = []

        def read() -> None:
            # Faust writes terminal escape codes (cursor hide/show) to stdout; the result follows them.
            for text in self.proc.stdout or ():
                if "done " in text:
                    line.append(text[text.index("done ") :])
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not line:
            return {"records": self.n, "received": 0, "error": f"no result in {timeout_s:.0f} s",
                    "log_tail": log_tail(self.log, 15)}
        _, first, last, k = line[0].split()
        secs = max(1e-9, float(last) - float(first))
        return {"records": self.n, "received": int(k), "seconds": round(secs, 3), "per_s": round(int(k) / secs),
                "readings_per_s": round(int(k) / secs), "partitions": PARTITIONS}

    def stop(self) -> None:
        stop_pid(self.proc.pid, timeout_s=15)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- PostgreSQL COPY into the readings shape ------------------------------------------------------------------


def pg_copy(db: str, n_rows: int, batch: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    rows: list[tuple[datetime, str, str, float]] = []
    i = 0
    while len(rows) < n_rows:
        kind = LOAD_KINDS[i % len(LOAD_KINDS)]
        sid = f"RAW_{kind[:3].upper()}_{i % 3000:05d}"
        ts = now + timedelta(microseconds=i)
        for m, v in _load_values(kind, i, 0).items():
            rows.append((ts, sid, m, v))
        i += 1
    rows = rows[:n_rows]
    out: dict[str, Any] = {}
    with psycopg.connect(db) as conn:
        for label, size in (("pg_copy", batch), ("pg_copy_one_transaction", n_rows)):
            conn.execute("DROP TABLE IF EXISTS bench_copy")
            conn.execute("CREATE TABLE bench_copy (LIKE readings INCLUDING ALL)")
            conn.commit()
            t0 = time.perf_counter()
            for k in range(0, n_rows, size):
                with conn.transaction(), conn.cursor() as cur, cur.copy(
                    "COPY bench_copy (ts, sensor_id, metric, value) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["timestamptz", "text", "text", "float8"])
                    for row in rows[k : k + size]:
                        copy.write_row(row)
            secs = time.perf_counter() - t0
            out[label] = {"rows": n_rows, "rows_per_transaction": size, "seconds": round(secs, 3),
                          "per_s": round(n_rows / secs), "readings_per_s": round(n_rows / secs / ROWS_PER_READING)}
        conn.execute("DROP TABLE IF EXISTS bench_copy")
        conn.commit()
    return out


# -- main ---------------------------------------------------------------------------------------------------------


LABELS = {
    "mqtt_qos0": "paho QoS 0 pub→sub (Mosquitto)",
    "mqtt_qos1": "paho QoS 1 pub→sub (Mosquitto)",
    "kafka_produce": "aiokafka produce, 1 reading/record, acks=all (Tansu)",
    "kafka_produce_envelopes": "aiokafka produce, 50-reading envelopes, acks=all",
    "kafka_consume": "aiokafka consume, 1 reading/record (Tansu)",
    "faust_agent": "bare Faust counting agent (Tansu)",
    "pg_copy": "PostgreSQL binary COPY into the readings shape, batched",
    "pg_copy_one_transaction": "PostgreSQL binary COPY, one transaction",
}
#: The hops a reading crosses one by one in the pipeline (QoS 0 and the envelope variant are context).
PIPELINE_HOPS = ("mqtt_qos1", "kafka_produce", "kafka_consume", "faust_agent", "pg_copy")


def run(args: argparse.Namespace) -> dict[str, Any]:
    pids = StartedPids()
    data = result_header("raw", args.quick, sys.argv)
    data.update(n=args.n, hops={}, started_pids=pids.items)
    hops: dict[str, dict[str, Any]] = data["hops"]
    faust: FaustHop | None = None
    t_all = time.perf_counter()
    with BenchStack("raw", pids) as stack:
        try:
            urls = stack.urls
            if "faust" in args.hops:
                faust = FaustHop(urls["IOC_KAFKA_URL"], args.n, stack.base, pids)
            if "mqtt" in args.hops:
                for qos in (0, 1):
                    hops[f"mqtt_qos{qos}"] = mqtt_pubsub(urls["IOC_MQTT_URL"], qos, args.n, args.timeout, pids)
                    console.print(f"mqtt qos{qos}: {hops[f'mqtt_qos{qos}']}")
            if "kafka" in args.hops:
                hops.update(kafka_hops(urls["IOC_KAFKA_URL"], args.n, args.timeout))
                console.print(f"kafka: { {k: v['per_s'] for k, v in hops.items() if k.startswith('kafka')} }")
            if "kafka_wait" in args.hops:  # a latency, not a rate: kept apart from the hops' rates
                data["kafka_wait"] = kafka_wait_hops(urls["IOC_KAFKA_URL"], 100 if args.quick else 250)
                console.print(f"kafka hop latency by fetch wait: "
                              f"{ {k: v['latency_ms'] for k, v in data['kafka_wait'].items()} }")
            if "copy" in args.hops:
                db = stack.new_database(short_tag())
                hops.update(pg_copy(db, int(args.n * ROWS_PER_READING), args.copy_batch))
            if faust is not None:
                hops["faust_agent"] = faust.measure(args.timeout)
        finally:
            if faust is not None:
                faust.stop()
    present = {k: hops[k]["readings_per_s"] for k in PIPELINE_HOPS if k in hops and hops[k].get("readings_per_s")}
    if present:
        slowest = min(present, key=lambda k: present[k])
        data["slowest_hop"] = {"name": slowest, "label": LABELS[slowest], "readings_per_s": present[slowest]}
    data["seconds"] = round(time.perf_counter() - t_all, 1)
    return data


def print_table(data: dict[str, Any]) -> None:
    t = Table(title=f"Raw limits on this machine ({data['n']:,} readings per hop; {ROWS_PER_READING:.2f} rows/reading)")
    for col in ("hop", "per s", "readings/s", "÷ slowest pipeline hop"):
        t.add_column(col, justify="left" if col == "hop" else "right")
    slow = data.get("slowest_hop", {}).get("readings_per_s")
    for key, label in LABELS.items():
        h = data["hops"].get(key)
        if h is None:
            continue
        rps = h.get("readings_per_s")
        t.add_row(label, f"{h.get('per_s', 0):,}", f"{rps:,}" if rps else h.get("error", "-"),
                  f"{rps / slow:.2f}" if rps and slow else "")
    console.print(t)
    waits = sorted(data.get("kafka_wait", {}).values(), key=lambda h: h["fetch_max_wait_ms"])
    if waits:
        w = Table(title="The Kafka hop (send → consumer) against the consumer's fetch wait, a record every 20 ms")
        for col in ("fetch_max_wait_ms", "ms p50 / p99 / max"):
            w.add_column(col, justify="right")
        for h in waits:
            q = h["latency_ms"]
            w.add_row(str(h["fetch_max_wait_ms"]), f"{q['p50']:.1f} / {q['p99']:.1f} / {q['max']:.1f}")
        console.print(w)
    if slow:
        console.print(f"slowest pipeline hop: [bold]{data['slowest_hop']['label']}[/] at {slow:,} readings/s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_faust":
        kafka_url, topic, n, datadir, go = sys.argv[2:7]
        sys.argv = [sys.argv[0], "worker"]  # what Faust's command line expects
        _faust_child(kafka_url, topic, int(n), datadir, go)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 10k messages per hop")
    ap.add_argument("--n", type=int, default=None, help="readings per hop (default 50,000; --quick 10,000)")
    ap.add_argument("--hops", default=",".join(HOPS), help="comma-separated subset of " + ",".join(HOPS))
    ap.add_argument("--copy-batch", type=int, default=1000, help="rows per COPY transaction")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds any one hop may take")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="where raw.json goes")
    args = ap.parse_args()
    args.n = args.n or (10_000 if args.quick else 50_000)
    args.hops = {h.strip() for h in args.hops.split(",") if h.strip()}
    if not args.hops <= set(HOPS) or args.n <= 0:
        ap.error(f"--hops must be a subset of {HOPS} and --n > 0")
    data = run(args)
    print_table(data)
    path = write_result(args.out, "raw", data)
    console.print(f"wrote {path} in {data['seconds']:.0f} s")


if __name__ == "__main__":
    main()
