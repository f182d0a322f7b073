"""The storage layer against a real PostgreSQL (plain path): idempotent, late-data-correct, race-free.

Every test gets a freshly migrated database of its own (``db_url``). No mocks: the point is
what the real server does with our SQL, including concurrent connections.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from ioc.alerting.rules import load_rules
from ioc.models import Finding
from ioc.storage.alerts_store import Delivery, apply_finding
from ioc.storage.deadletters import DeadLetter, write_deadletters
from ioc.storage.migrate import available_migrations, migrate
from ioc.storage.offset_ledger import (
    Claim,
    Position,
    claim_offset,
    first_record,
    forget_partition,
    next_offsets,
)
from ioc.storage.outbox import claim_due, mark_delivered, mark_failed_attempt
from ioc.storage.readings_sink import WriteResult, write_readings, write_readings_group
from ioc.wire import Reading

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
ROLLUP_COLUMNS = ("bucket", "sensor_id", "metric", "n", "mean", "min", "max", "last")

# An independent statement of what readings_1m must hold: the raw rows grouped by minute.
GROUP_BY_1M = """
SELECT date_trunc('minute', ts) AS bucket, sensor_id, metric, count(*)::integer, avg(value), min(value),
       max(value), (array_agg(value ORDER BY ts DESC))[1]
FROM readings GROUP BY 1, 2, 3 ORDER BY 2, 3, 1
"""
ROLLUP_1M = "SELECT bucket, sensor_id, metric, n, mean, min, max, last FROM readings_1m ORDER BY 2, 3, 1"


def _write(url: str, readings: Sequence[Reading]) -> WriteResult:
    with psycopg.connect(url) as conn:
        return write_readings(conn, readings)


def _rows(url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def _assert_same_rows(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], what: str) -> None:
    """Row-by-row, column-by-column equality; floats within 1e-9 (summation order may differ)."""
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    for g, w in zip(got, want, strict=True):
        for col, a, b in zip(ROLLUP_COLUMNS, g, w, strict=True):
            if isinstance(a, float) or isinstance(b, float):
                assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{what}: {col} {a!r} != {b!r} in {g} vs {w}"
            else:
                assert a == b, f"{what}: {col} {a!r} != {b!r} in {g} vs {w}"


def _weather(sensor: str, ts: datetime, seq: int, rng: random.Random) -> Reading:
    return Reading(sensor, "weather", ts, seq, {
        "temperature_c": round(rng.uniform(22, 34), 3),
        "humidity_pct": round(rng.uniform(50, 100), 3),
        "pressure_hpa": round(rng.uniform(995, 1015), 3),
    })


def _water(sensor: str, ts: datetime, seq: int, level: float) -> Reading:
    return Reading(sensor, "water_level", ts, seq, {"water_level_m": level})


# -- readings and readings_1m ---------------------------------------------------------------------------


def test_the_same_batch_twice_gives_the_same_rows(db_url: str) -> None:
    rng = random.Random(1)
    batch = [_weather(f"W{s}", T0 + timedelta(seconds=15 * k), k, rng) for s in range(5) for k in range(40)]
    first = _write(db_url, batch)
    assert first == WriteResult(rows_in=600, rows_inserted=600, buckets_touched=5 * 3 * 10)
    readings_before = _rows(db_url, "SELECT ts, sensor_id, metric, value FROM readings ORDER BY 2, 3, 1")
    rollup_before = _rows(db_url, ROLLUP_1M)

    second = _write(db_url, batch)
    assert second.rows_in == 600
    assert second.rows_inserted == 0
    assert second.buckets_touched == 0
    assert _rows(db_url, "SELECT ts, sensor_id, metric, value FROM readings ORDER BY 2, 3, 1") == readings_before
    assert _rows(db_url, ROLLUP_1M) == rollup_before


def test_duplicates_inside_one_batch_are_stored_once(db_url: str) -> None:
    r = _water("G1", T0, 1, 2.5)
    result = _write(db_url, [r, r, r])
    assert (result.rows_in, result.rows_inserted) == (3, 1)
    assert _rows(db_url, "SELECT n, mean, last FROM readings_1m") == [(1, 2.5, 2.5)]


def test_late_data_corrects_its_bucket(db_url: str) -> None:
    _write(db_url, [_water("G1", T0, 1, 1.0), _water("G1", T0 + timedelta(seconds=30), 2, 2.0)])
    assert _rows(db_url, "SELECT n, mean, min, max, last FROM readings_1m") == [(2, 1.5, 1.0, 2.0, 2.0)]

    # Late, but not the latest of its minute: n, mean, min and max change; last does not.
    res = _write(db_url, [_water("G1", T0 + timedelta(seconds=10), 3, 9.0)])
    assert (res.rows_inserted, res.buckets_touched) == (1, 1)
    assert _rows(db_url, "SELECT n, mean, min, max, last FROM readings_1m") == [(3, 4.0, 1.0, 9.0, 2.0)]

    # Late and the latest of its minute, in a batch that also carries a fresh reading of the next minute.
    _write(db_url, [_water("G1", T0 + timedelta(seconds=70), 4, 5.0), _water("G1", T0 + timedelta(seconds=50), 5, 0.5)])
    assert _rows(db_url, "SELECT bucket, n, mean, min, max, last FROM readings_1m ORDER BY bucket") == [
        (T0, 4, 3.125, 0.5, 9.0, 0.5),
        (T0 + timedelta(minutes=1), 1, 5.0, 5.0, 5.0, 5.0),
    ]


def test_readings_1m_equals_a_group_by_after_duplicates_and_out_of_order_batches(db_url: str) -> None:
    rng = random.Random(20260301)
    sensors = [f"AQ{i:02d}" for i in range(12)]
    # Irregular spacing (3-25 s), so minutes hold different counts and some hold a single reading.
    stream: list[Reading] = []
    for s in sensors:
        ts = T0 + timedelta(seconds=rng.uniform(0, 20))
        for k in range(120):
            ts += timedelta(seconds=rng.uniform(3, 25), microseconds=rng.randrange(1_000_000))
            stream.append(Reading(s, "air", ts, k, {"pm25": rng.uniform(5, 300), "no2": rng.gauss(40, 15)}))
    stream.sort(key=lambda r: r.ts)
    # 5 % out of order: a reading held back and delivered 20-400 positions later (often another batch).
    delivered = list(stream)
    for i in sorted(rng.sample(range(len(stream)), len(stream) // 20), reverse=True):
        r = delivered.pop(i)
        delivered.insert(min(len(delivered), i + rng.randint(20, 400)), r)
    # 5 % duplicates: redelivered copies, some in the same batch, some much later.
    for r in rng.sample(stream, len(stream) // 20):
        delivered.insert(rng.randrange(len(delivered) + 1), r)

    inserted = 0
    i = 0
    while i < len(delivered):
        size = rng.randint(1, 250)
        inserted += _write(db_url, delivered[i : i + size]).rows_inserted
        i += size

    distinct_rows = sum(len(r.metrics) for r in stream)
    assert inserted == distinct_rows
    assert _rows(db_url, "SELECT count(*) FROM readings") == [(distinct_rows,)]
    _assert_same_rows(_rows(db_url, ROLLUP_1M), _rows(db_url, GROUP_BY_1M), "readings_1m vs GROUP BY readings")

    # And against the rows we sent, computed without SQL at all.
    want: dict[tuple[datetime, str, str], list[tuple[datetime, float]]] = {}
    for r in stream:
        for m, v in r.metrics.items():
            want.setdefault((r.ts.replace(second=0, microsecond=0), r.sensor_id, m), []).append((r.ts, v))
    expected = []
    for (bucket, sid, m), pts in want.items():
        vals = [v for _, v in pts]
        expected.append((bucket, sid, m, len(vals), math.fsum(vals) / len(vals), min(vals), max(vals), max(pts)[1]))
    expected.sort(key=lambda t: (t[1], t[2], t[0]))
    _assert_same_rows(_rows(db_url, ROLLUP_1M), expected, "readings_1m vs the readings sent")


@pytest.mark.parametrize("view, width", [("readings_1h", "1 hour"), ("readings_1d", "1 day")])
def test_hourly_and_daily_views_equal_a_group_by_over_readings(db_url: str, view: str, width: str) -> None:
    rng = random.Random(7)
    # Three days at 7-minute spacing, straddling midnight UTC and local midnight (UTC+7) alike.
    start = datetime(2026, 2, 27, 20, 3, tzinfo=UTC)
    batch = [_weather(f"WX{s}", start + timedelta(minutes=7 * k), k, rng) for s in range(3) for k in range(620)]
    for i in range(0, len(batch), 500):
        _write(db_url, batch[i : i + 500])
    group_by = (
        f"SELECT date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00'), sensor_id, metric,"
        " count(*)::integer, avg(value), min(value), max(value), (array_agg(value ORDER BY ts DESC))[1]"
        " FROM readings GROUP BY 1, 2, 3 ORDER BY 2, 3, 1"
    )
    got = _rows(db_url, f"SELECT bucket, sensor_id, metric, n, mean, min, max, last FROM {view} ORDER BY 2, 3, 1")
    _assert_same_rows(got, _rows(db_url, group_by), f"{view} vs GROUP BY date_bin")
    # Buckets are aligned to UTC hour/day boundaries and every reading is counted once.
    assert _rows(db_url, f"SELECT sum(n) FROM {view}") == [(len(batch) * 3,)]
    if view == "readings_1d":
        assert {r[0] for r in got} == {datetime(2026, 2, d, tzinfo=UTC) for d in (27, 28)} | {
            datetime(2026, 3, d, tzinfo=UTC) for d in (1, 2)
        }


# -- migrations ------------------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_records_its_versions(db_url: str) -> None:
    again = migrate(db_url)  # db_url was already migrated once by the fixture
    timescale = bool(_rows(db_url, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"))
    backend = "timescale" if timescale else "plain"
    assert again.backend == backend
    assert again.applied == []
    expected = sorted({(m.version, m.backend) for m in available_migrations() if m.backend in ("any", backend)})
    assert _rows(db_url, "SELECT version, backend FROM schema_migrations ORDER BY version") == expected
    assert [v for v, _ in expected][:4] == ["001", "002", "003", "004"]
    kinds = dict(_rows(db_url, "SELECT relname, relkind FROM pg_class WHERE relname LIKE %s", ("readings%",)))
    assert kinds["readings"] == "r" and kinds["readings_1m"] == "r"
    if not timescale:  # on TimescaleDB these are continuous aggregates (tests/integration/test_timescale.py)
        assert kinds["readings_1h"] == "v" and kinds["readings_1d"] == "v"


# -- alerts ----------------------------------------------------------------------------------------------


DELIVERY = Delivery(load_rules(), ("mqtt",))


def _finding(sensor: str, severity: str | None = "warning") -> Finding:
    return Finding(sensor, "flood_alarm_level", "flood", "water_level_m", T0, severity, 9.6, 9.5, "BĐ II")


def _race(db_url: str, f: Finding, contenders: int = 2) -> list[list[Any]]:
    """``apply_finding`` for the same finding from several connections released at the same moment."""
    barrier = threading.Barrier(contenders)
    results: list[list[Any]] = []
    errors: list[BaseException] = []

    def contender() -> None:
        try:
            with psycopg.connect(db_url) as conn:
                barrier.wait(10)
                results.append(apply_finding(conn, f, DELIVERY))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=contender) for _ in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_two_connections_racing_open_exactly_one_alert(db_url: str) -> None:
    # Repeat the race: one lucky interleaving proves little.
    for round_ in range(15):
        f = _finding(f"GAUGE_{round_}")
        results = _race(db_url, f)
        assert sorted(len(r) for r in results) == [0, 1], results
        assert _rows(db_url, "SELECT count(*), min(state) FROM alerts WHERE alert_key = %s", (f.alert_key,)) == [
            (1, "open")
        ]
        assert _rows(
            db_url,
            "SELECT count(*) FROM alert_events e JOIN alerts a USING (alert_id) WHERE a.alert_key = %s"
            " AND e.event = 'opened'",
            (f.alert_key,),
        ) == [(1,)]


def test_alert_lifecycle_reopens_after_resolution(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        assert [c.event for c in apply_finding(conn, _finding("G9", "warning"), DELIVERY)] == ["opened"]
        assert apply_finding(conn, _finding("G9", "warning"), DELIVERY) == []
        assert [c.event for c in apply_finding(conn, _finding("G9", "critical"), DELIVERY)] == ["escalated"]
        assert [c.event for c in apply_finding(conn, _finding("G9", None), DELIVERY)] == ["resolved"]
        assert apply_finding(conn, _finding("G9", None), DELIVERY) == []
        assert [c.event for c in apply_finding(conn, _finding("G9", "info"), DELIVERY)] == ["opened"]
    assert _rows(db_url, "SELECT state, severity FROM alerts ORDER BY alert_id") == [
        ("resolved", "critical"),
        ("open", "info"),
    ]


def test_every_delivery_attempt_is_recorded_with_its_channel(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        (n,) = apply_finding(conn, _finding("G10"), DELIVERY)
        (claimed,) = claim_due(conn, "mqtt")
        assert claimed.notification_id == n.notification_id and claimed.attempt == 1
        assert claim_due(conn, "mqtt") == []  # leased: nobody else takes it meanwhile
        mark_failed_attempt(conn, claimed, "broker down", retry_in_s=0.0)
        (again,) = claim_due(conn, "mqtt")
        assert again.attempt == 2
        assert mark_delivered(conn, again) and not mark_delivered(conn, again)
    assert _rows(db_url, "SELECT event FROM alert_events WHERE event <> 'opened' ORDER BY event_id") == [
        ("notify_retry:mqtt",),
        ("notified:mqtt",),
    ]


# -- dead letters ----------------------------------------------------------------------------------------


def _letters(n: int, received_at: datetime) -> list[DeadLetter]:
    return [
        DeadLetter(received_at, "mqtt", "bad_json", "truncated", f"khanhhoa/v1/rain/R{i}", b'{"sensor_id": "R' + bytes([48 + i]))
        for i in range(n)
    ]


def test_write_deadletters_is_idempotent_by_content_and_counts_arrivals(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        assert write_deadletters(conn, _letters(5, T0)).new == 5
        # Redelivered: same topic and bytes, later receive time (the key ignores it), and a copy in one batch.
        again = _letters(5, T0 + timedelta(minutes=3))
        assert write_deadletters(conn, again + again[:2]).new == 0
        assert write_deadletters(conn, []).new == 0
        # Same bytes on another topic is another letter.
        other = DeadLetter(T0, "mqtt", "bad_json", "truncated", "khanhhoa/v1/rain/OTHER", _letters(1, T0)[0].raw)
        assert write_deadletters(conn, [other]).new == 1
    assert _rows(db_url, "SELECT count(*), count(DISTINCT dl_key) FROM deadletters") == [(6, 6)]
    assert _rows(db_url, "SELECT min(received_at) FROM deadletters") == [(T0,)]
    # one row per content, but every arrival counted, and when it was last seen
    assert _rows(db_url, "SELECT occurrences, last_seen_at FROM deadletters WHERE topic = 'khanhhoa/v1/rain/R0'") == [
        (3, T0 + timedelta(minutes=3))
    ]
    assert _rows(db_url, "SELECT sum(occurrences) FROM deadletters") == [(5 + 7 + 1,)]
    assert _rows(db_url, "SELECT occurrences, last_seen_at FROM deadletters WHERE topic LIKE '%%OTHER'") == [(1, T0)]


def test_a_deadletter_batch_redelivered_by_kafka_is_counted_once(db_url: str) -> None:
    at = Position("g:ioc.deadletter", 3, 0)
    with psycopg.connect(db_url) as conn:
        assert write_deadletters(conn, _letters(2, T0), at).new == 2
        again = write_deadletters(conn, _letters(2, T0), at)  # the same Kafka record after a crash
        assert (again.new, again.claim) == (0, Claim.DONE)
        ahead = write_deadletters(conn, _letters(2, T0), Position(at.stream, 3, 2))  # 1 was never applied
        assert (ahead.claim, ahead.expected_offset) == (Claim.AHEAD, 1)
    assert _rows(db_url, "SELECT sum(occurrences) FROM deadletters") == [(2,)]


def test_a_replayed_letter_that_fails_again_is_pending_again(db_url: str) -> None:
    (letter,) = _letters(1, T0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert write_deadletters(conn, [letter]).new == 1
        conn.execute("UPDATE deadletters SET replayed_at = now()")
        failed_again = DeadLetter(T0, "mqtt", "unknown_sensor", "still unknown", letter.topic, letter.raw)
        assert write_deadletters(conn, [failed_again]).new == 1
        assert write_deadletters(conn, [failed_again]).new == 0
    assert _rows(db_url, "SELECT count(*), bool_and(replayed_at IS NULL), min(reason), min(occurrences) FROM deadletters") == [
        (1, True, "unknown_sensor", 3)
    ]


def test_the_offset_ledger_applies_each_offset_once_and_reports_what_was_skipped(db_url: str) -> None:
    def claim(offset: int, allow_jump: bool = False) -> tuple[Claim, int]:
        with psycopg.connect(db_url) as conn, conn.transaction(), conn.cursor() as cur:
            r = claim_offset(cur, Position("g:ioc.readings", 0, offset), allow_jump=allow_jump)
            return r.claim, r.expected

    # A partition starts at 0: a first record at 7 means 0..6 were skipped on the way; they are
    # read first, unless the broker no longer has them (retention), which the caller reports.
    assert claim(7) == (Claim.AHEAD, 0)
    assert claim(7, allow_jump=True) == (Claim.NEXT, 7)
    assert claim(8) == (Claim.NEXT, 8)
    assert claim(8) == (Claim.DONE, 9)
    assert claim(3) == (Claim.DONE, 9)
    assert claim(11) == (Claim.AHEAD, 9)  # 9 and 10 were skipped: nothing is applied
    assert claim(9) == (Claim.NEXT, 9)
    assert claim(15, allow_jump=True) == (Claim.NEXT, 10)  # the broker no longer has 10..14
    assert claim(16) == (Claim.NEXT, 16)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert next_offsets(conn, "g:ioc.readings") == {0: 17}
        assert next_offsets(conn, "other") == {}
        with conn.transaction(), conn.cursor() as cur:
            assert claim_offset(cur, Position("other", 3, 0)).claim is Claim.NEXT  # a fresh partition at 0


def test_the_ledger_remembers_which_record_a_partition_started_from(db_url: str) -> None:
    """What tells a topic re-created by a broker that lost its log from a redelivery of the old one."""
    stream = "g:recreated"
    with psycopg.connect(db_url, autocommit=True) as conn:
        with conn.transaction(), conn.cursor() as cur:
            assert claim_offset(cur, Position.of(stream, 1, 0, b"old topic, first envelope")).claim is Claim.NEXT
        for offset in (1, 2, 3):
            with conn.transaction(), conn.cursor() as cur:
                assert claim_offset(cur, Position.of(stream, 1, offset, b"later")).claim is Claim.NEXT
        old = Position.of(stream, 1, 0, b"old topic, first envelope")
        new = Position.of(stream, 1, 0, b"new topic, first envelope")
        assert first_record(conn, stream, 1) == old.first_record != new.first_record
        with conn.transaction(), conn.cursor() as cur:  # the ledger alone cannot tell: the guard compares
            assert claim_offset(cur, new).claim is Claim.DONE
        forget_partition(conn, stream, 1)
        with conn.transaction(), conn.cursor() as cur:
            assert claim_offset(cur, new).claim is Claim.NEXT
        assert first_record(conn, stream, 1) == new.first_record
        assert next_offsets(conn, stream) == {1: 1}
        assert first_record(conn, stream, 2) is None  # a partition the ledger has not seen


def test_readings_are_written_only_for_the_next_offset(db_url: str) -> None:
    readings = [Reading("S1", "rain", T0 + timedelta(minutes=i), i, {"rain_mm": float(i)}) for i in range(3)]
    with psycopg.connect(db_url) as conn:
        first = write_readings(conn, readings[:1], Position("g:r", 2, 0))
        skipped = write_readings(conn, readings[1:2], Position("g:r", 2, 5))
        again = write_readings(conn, readings[1:2], Position("g:r", 2, 0))
        nxt = write_readings(conn, readings[1:], Position("g:r", 2, 1))
    assert (first.claim, first.rows_inserted) == (Claim.NEXT, 1)
    assert (skipped.claim, skipped.expected_offset, skipped.rows_inserted) == (Claim.AHEAD, 1, 0)
    assert (again.claim, again.rows_inserted) == (Claim.DONE, 0)
    assert (nxt.claim, nxt.rows_inserted) == (Claim.NEXT, 2)
    assert _rows(db_url, "SELECT count(*) FROM readings") == [(3,)]


def test_rollup_updates_at_city_cadence_mostly_stay_on_their_page(db_url: str) -> None:
    """A sensor every 10 s is one insert and five updates per bucket, while the next minute's buckets
    are inserted. Updates that stay on their page (HOT) write no index entries; in full pages about
    a third do. Migration 011 leaves room for them."""
    rng = random.Random(11)
    sensors = [f"W{i:04d}" for i in range(1000)]
    passes = 18  # three minutes
    stream = [_weather(s, T0 + timedelta(seconds=10 * k + i * 0.009), k, rng)
              for k in range(passes) for i, s in enumerate(sensors)]
    with psycopg.connect(db_url) as conn:
        for at in range(0, len(stream), 50):  # envelopes of 50, as the worker writes them
            write_readings(conn, stream[at:at + 50])
    want_updates = 3 * len(sensors) * (passes - passes // 6)  # all but each bucket's first reading

    def counts() -> tuple[int, int]:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                               " WHERE relname = 'readings_1m'").fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    deadline = time.monotonic() + 15  # backends report their counters about once a second
    while counts()[0] < want_updates and time.monotonic() < deadline:
        time.sleep(0.2)
    updated, hot = counts()
    assert updated == want_updates
    assert hot / updated >= 0.6, f"only {hot} of {updated} roll-up updates were HOT"
    _assert_same_rows(_rows(db_url, ROLLUP_1M), _rows(db_url, GROUP_BY_1M), "after the passes")


def test_small_and_large_batches_take_different_paths_to_the_same_rows(db_url: str) -> None:
    from ioc.storage.readings_sink import ARRAY_ROWS_MAX

    rng = random.Random(7)
    big = [_weather(f"W{i % 40}", T0 + timedelta(seconds=7 * i), i, rng) for i in range(ARRAY_ROWS_MAX)]  # 3 rows each
    small = [_water("G1", T0 + timedelta(seconds=13 * i), i, 1.0 + i / 100) for i in range(50)]
    overlap = big[:100] + [Reading("W1", "weather", T0 + timedelta(seconds=1), 1, {"temperature_c": 3})]  # an int
    with psycopg.connect(db_url) as conn:
        first = write_readings(conn, big)  # binary COPY through the stage
        second = write_readings(conn, small + overlap)  # binary arrays in the statement
    assert (first.rows_in, first.rows_inserted) == (3 * ARRAY_ROWS_MAX, 3 * ARRAY_ROWS_MAX)
    assert (second.rows_in, second.rows_inserted) == (50 + 301, 51)
    _assert_same_rows(_rows(db_url, ROLLUP_1M), _rows(db_url, GROUP_BY_1M), "after both paths")


def test_a_group_commit_claims_every_partitions_range_or_writes_nothing(db_url: str) -> None:
    readings = [Reading("S1", "rain", T0 + timedelta(minutes=i), i, {"rain_mm": float(i)}) for i in range(6)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        # A partition's first record has no ledger row yet: the group declines, one by one claims it.
        assert write_readings_group(conn, readings[:2], "g:r", [(0, 0, 1)]) is None
        write_readings(conn, readings[:1], Position("g:r", 0, 0))
        write_readings(conn, readings[1:2], Position("g:r", 1, 0))
        # Partition 0 is at 1, partition 1 at 1: both ranges are next, so both advance together.
        got = write_readings_group(conn, readings[2:5], "g:r", [(0, 1, 2), (1, 1, 1)])
        assert got is not None and (got.rows_in, got.rows_inserted) == (3, 3)
        assert next_offsets(conn, "g:r") == {0: 3, 1: 2}
        # One range redelivered (0 starts at 2, the ledger wants 3): nothing is written, no offset moves.
        assert write_readings_group(conn, readings[5:], "g:r", [(0, 2, 3), (1, 2, 2)]) is None
        assert next_offsets(conn, "g:r") == {0: 3, 1: 2}
        # One range ahead of the ledger (offsets skipped): the same.
        assert write_readings_group(conn, readings[5:], "g:r", [(1, 4, 4)]) is None
    assert _rows(db_url, "SELECT count(*) FROM readings") == [(5,)]
    _assert_same_rows(_rows(db_url, ROLLUP_1M), _rows(db_url, GROUP_BY_1M), "after group commits")


def test_peak_severity_survives_de_escalation(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for sev in ("info", "warning", "critical", "warning", "info"):
            apply_finding(conn, _finding("G_PEAK", sev), DELIVERY)
        assert conn.execute("SELECT severity, peak_severity, state FROM alerts WHERE sensor_id = 'G_PEAK'").fetchall() == [
            ("info", "critical", "open")
        ]
        events = [r[0] for r in conn.execute(
            "SELECT event FROM alert_events e JOIN alerts a USING (alert_id) WHERE a.sensor_id = 'G_PEAK' ORDER BY event_id"
        )]
        assert events == ["opened", "escalated", "escalated", "deescalated", "deescalated"]
