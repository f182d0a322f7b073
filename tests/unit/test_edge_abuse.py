"""Abuse at the edge, pure: ioc.wire validation and the bridge's rate limiting, fuzzed with hypothesis.

Whatever arrives, validation either returns a Reading that satisfies every invariant the rest of
the pipeline relies on, or raises PayloadRejected with a known reason. Nothing else escapes.
"""

from __future__ import annotations

import ast
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ioc.domain import KIND_METRICS
from ioc.errors import PayloadRejected
from ioc.settings import Settings
from ioc.storage.deadletters import DeadLetter, decode_batch, encode_batch
from ioc.wire import (
    AUTO_SENSOR_ID,
    Reading,
    SensorInfo,
    ValidationPolicy,
    parse_topic,
    urgent_level,
    validate,
)
from streams.bridge import Bridge, topic_sensor_id
from streams.mqtt_loop import AckToken
from streams.sensor_rate_limit import ExcessAggregator, SensorRateLimiter
from streams.topics import partition_for

NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
POLICY = ValidationPolicy()
REASONS = {
    "too_large", "bad_topic", "unknown_kind", "bad_json", "bad_schema", "sensor_mismatch", "bad_ts",
    "unknown_sensor", "bad_sensor_id", "kind_mismatch", "no_metrics", "unknown_metric", "not_finite",
    "future_ts", "too_late",
}
REGISTRY = {"G1": SensorInfo("water_level"), "A1": SensorInfo("air"), "Ừ-Cảm biến'; --": SensorInfo("rain")}
SETTINGS = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1")
HOSTILE = ["+", "#", "/", "'", '"', ";", "--", "/*", "%s", "%(x)s", "{}", "\\", "\x00", "\u202e", "$$", "é", "中"]


def _check(topic: str, raw: bytes, policy: ValidationPolicy = POLICY, registry: dict[str, SensorInfo] = REGISTRY
           ) -> Reading | str:
    """Validate and assert the contract; returns the Reading or the reject reason."""
    try:
        r = validate(topic, raw, sensors=registry.get, now=NOW, policy=policy)
    except PayloadRejected as e:
        assert e.reason in REASONS, e.reason
        assert e.detail.isprintable(), "a reject detail must be safe to log and to store"
        assert len(e.detail) <= 1200
        return e.reason
    assert len(raw) <= policy.max_payload_bytes
    kind, sid = parse_topic(topic)
    assert (r.kind, r.sensor_id) == (kind, sid)
    assert sid in registry or (policy.auto_register and AUTO_SENSOR_ID.fullmatch(sid))
    assert r.metrics and set(r.metrics) <= set(KIND_METRICS[kind])
    assert all(isinstance(v, float) and math.isfinite(v) for v in r.metrics.values())
    assert 0 <= r.seq < 2**63
    assert r.ts.tzinfo is not None and NOW - policy.late_bound <= r.ts <= NOW + policy.max_future
    return r


json_leaf = st.one_of(
    st.none(), st.booleans(), st.text(max_size=20),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
)
json_value = st.recursive(json_leaf, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                                                                  max_size=4),
                          max_leaves=30)


def _ts_text(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


payload = st.fixed_dictionaries(
    {
        "sensor_id": st.one_of(st.sampled_from(sorted(REGISTRY)), st.text(max_size=30), json_value),
        "ts": st.one_of(
            st.datetimes(timezones=st.just(UTC)).map(_ts_text),
            st.datetimes(min_value=NOW.replace(tzinfo=None) - timedelta(days=8),
                         max_value=NOW.replace(tzinfo=None) + timedelta(minutes=6), timezones=st.just(UTC)).map(_ts_text),
            st.datetimes().map(lambda d: d.isoformat()), json_value,
        ),
        "seq": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), json_value),
        "metrics": st.one_of(
            st.dictionaries(st.sampled_from(["water_level_m", "pm25", "rain_mm", *HOSTILE]),
                            st.one_of(st.floats(), st.integers(min_value=-(10**400), max_value=10**400), json_value),
                            max_size=4),
            json_value,
        ),
    },
    optional={"extra": json_value},
)
topics = st.one_of(
    st.builds(lambda k, s: f"khanhhoa/v1/{k}/{s}", st.sampled_from([*KIND_METRICS, "x", "", "+", "#"]),
              st.one_of(st.sampled_from(sorted(REGISTRY)), st.text(max_size=20))),
    st.text(max_size=60),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, body=payload)
def test_structured_fuzz_only_valid_readings_pass(topic: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body, allow_nan=True, default=str).encode("utf-8", "surrogatepass")
    _check(topic, raw)


@settings(max_examples=400, deadline=None)
@given(topic=topics, raw=st.one_of(st.binary(max_size=5000), st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_arbitrary_bytes_never_escape_as_anything_but_a_reject(topic: str, raw: bytes) -> None:
    _check(topic, raw)


@given(head=st.binary(max_size=200), fill=st.integers(1, 100_000))
def test_oversize_is_rejected_before_anything_is_parsed(head: bytes, fill: int) -> None:
    raw = head + b"{" * (POLICY.max_payload_bytes + fill - len(head))
    assert _check("not/even/a/topic", raw) == "too_large"


@pytest.mark.parametrize("depth", [100, 10_000, 150_000])
def test_deep_nesting_is_a_schema_reject_not_a_recursion_error(depth: int) -> None:
    policy = ValidationPolicy(max_payload_bytes=1_048_576)  # the largest the settings allow
    base = '{"sensor_id":"G1","ts":"2026-11-28T07:59:00Z","seq":1,"metrics":%s}'
    for inner in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth, "[" * depth):
        assert _check("khanhhoa/v1/water_level/G1", (base % inner).encode(), policy) in ("bad_schema", "bad_json")


@pytest.mark.parametrize(("value", "reason"), [
    ("NaN", "bad_json"), ("Infinity", "bad_json"), ("-Infinity", "bad_json"), ("1e999", "bad_schema"),
    ("-1e999", "bad_schema"), ('"1.0"', "bad_schema"), ("true", "bad_schema"), ("null", "bad_schema"),
    ("[1.0]", "bad_schema"), ("{}", "bad_schema"), ("1" * 400, "bad_schema"),
])
def test_non_finite_and_wrong_typed_values(value: str, reason: str) -> None:
    raw = b'{"sensor_id":"G1","ts":"2026-11-28T07:59:00Z","seq":1,"metrics":{"water_level_m":%s}}' % value.encode()
    assert _check("khanhhoa/v1/water_level/G1", raw) == reason


@pytest.mark.parametrize("seq", ["-1", str(2**63), str(10**40), "1" * 5000, "1.5", '"7"'])
def test_huge_negative_or_wrong_typed_seq_is_rejected(seq: str) -> None:
    raw = b'{"sensor_id":"G1","ts":"2026-11-28T07:59:00Z","seq":%s,"metrics":{"water_level_m":1.0}}' % seq.encode()
    expected = "too_large" if len(raw) > POLICY.max_payload_bytes else "bad_schema"
    assert _check("khanhhoa/v1/water_level/G1", raw) == expected


def test_largest_seq_is_accepted() -> None:
    raw = b'{"sensor_id":"G1","ts":"2026-11-28T07:59:00Z","seq":%d,"metrics":{"water_level_m":1.0}}' % (2**63 - 1)
    r = _check("khanhhoa/v1/water_level/G1", raw)
    assert isinstance(r, Reading) and r.seq == 2**63 - 1


@settings(max_examples=300, deadline=None)
@given(ts=st.datetimes(timezones=st.sampled_from([UTC, None])))
def test_any_timestamp_far_past_or_future_is_a_clean_verdict(ts: datetime) -> None:
    raw = b'{"sensor_id":"G1","ts":"%s","seq":1,"metrics":{"water_level_m":1.0}}' % ts.isoformat().encode()
    got = _check("khanhhoa/v1/water_level/G1", raw)
    if ts.tzinfo is None:
        assert got == "bad_ts"
    elif ts > NOW + POLICY.max_future:
        assert got == "future_ts"
    elif ts < NOW - POLICY.late_bound:
        assert got == "too_late"
    else:
        assert isinstance(got, Reading)


@settings(max_examples=300, deadline=None)
@given(sid=st.lists(st.sampled_from(HOSTILE + ["a", "B", "9", "_", ".", "-", "Ừ"]), min_size=1, max_size=12).map("".join))
def test_topic_injection_and_sql_metacharacters_in_sensor_ids(sid: str) -> None:
    """Wildcards and separators never make a topic parse into another sensor; unknown ids are
    auto-registered only when they are plain; operator-registered odd ids are accepted as data."""
    topic = f"khanhhoa/v1/rain/{sid}"
    raw = json.dumps({"sensor_id": sid, "ts": "2026-11-28T07:59:00Z", "seq": 1, "metrics": {"rain_mm": 0.5}}).encode()
    if "/" in sid:
        assert _check(topic, raw) == "bad_topic"
        assert topic_sensor_id(topic) is None
        return
    assert topic_sensor_id(topic) == sid
    assert _check(topic, raw) == "unknown_sensor"
    auto = _check(topic, raw, ValidationPolicy(auto_register=True), {})
    if AUTO_SENSOR_ID.fullmatch(sid):
        assert isinstance(auto, Reading) and auto.sensor_id == sid
    else:
        assert auto == "bad_sensor_id"
    registered = _check(topic, raw, POLICY, {sid: SensorInfo("rain")})
    assert isinstance(registered, Reading) and registered.sensor_id == sid


def test_a_registered_id_with_sql_and_unicode_is_plain_data() -> None:
    sid = "Ừ-Cảm biến'; --"
    raw = json.dumps({"sensor_id": sid, "ts": "2026-11-28T07:59:00Z", "seq": 3, "metrics": {"rain_mm": 1.5}}).encode()
    r = _check(f"khanhhoa/v1/rain/{sid}", raw)
    assert isinstance(r, Reading) and r.sensor_id == sid


# ---------------------------------------------------------------- the bridge's rate limit
@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=1000), burst=st.integers(1, 500),
    gaps=st.lists(st.floats(min_value=0, max_value=2.0), min_size=1, max_size=400),
)
def test_token_bucket_never_allows_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int,
                                                                          gaps: list[float]) -> None:
    now = [0.0]
    rl = SensorRateLimiter(rate, burst, monotonic=lambda: now[0])
    allowed = 0
    for g in gaps:
        now[0] += g
        allowed += rl.allow("S")
    assert allowed <= burst + rate * now[0] + 1e-6
    assert rl.allow("other")  # another sensor has its own bucket


@settings(max_examples=100, deadline=None)
@given(rate=st.floats(min_value=0.5, max_value=200), burst=st.integers(1, 50), n=st.integers(1, 300))
def test_a_sensor_within_its_rate_is_never_limited(rate: float, burst: int, n: int) -> None:
    now = [0.0]
    rl = SensorRateLimiter(rate, burst, monotonic=lambda: now[0])
    for _ in range(n):
        assert rl.allow("S")
        now[0] += 1.0 / rate


def test_zero_rate_disables_and_bad_arguments_say_what_to_do() -> None:
    rl = SensorRateLimiter(0, 1)
    assert all(rl.allow("S") for _ in range(10_000)) and len(rl) == 0
    with pytest.raises(ValueError, match="rate_hz"):
        SensorRateLimiter(float("nan"), 1)
    with pytest.raises(ValueError, match="burst"):
        SensorRateLimiter(1, 0)


def test_idle_buckets_are_evicted_so_spoofed_ids_cannot_grow_memory() -> None:
    now = [0.0]
    rl = SensorRateLimiter(10, 5, monotonic=lambda: now[0])
    for i in range(1000):
        rl.allow(f"spoof{i}")
    assert len(rl) == 1000
    now[0] = 1.0  # 10 tokens refilled: every bucket is full again
    assert rl.evict_full() == 1000 and len(rl) == 0


@settings(max_examples=100, deadline=None)
@given(events=st.lists(st.tuples(st.sampled_from(["S1", "S2", "S3"]), st.floats(0, 0.5)), max_size=300),
       max_count=st.integers(1, 50))
def test_excess_is_aggregated_with_exact_counts_and_every_ack_once(events: list[tuple[str, float]],
                                                                   max_count: int) -> None:
    now = [0.0]
    agg = ExcessAggregator(1.0, max_count, 10, 20, monotonic=lambda: now[0])
    out: list[tuple[DeadLetter, tuple[AckToken, ...]]] = []
    for i, (sid, gap) in enumerate(events):
        now[0] += gap
        out += agg.due()
        out += agg.add(sid, f"khanhhoa/v1/noise/{sid}", b"p%d" % i, AckToken(0, i), NOW)
    out += agg.drain()
    assert sum(d.count for d, _ in out) == len(events)
    tokens = [t.mid for _, ts in out for t in ts]
    assert sorted(tokens) == list(range(len(events)))  # every message acked exactly once
    for d, ts in out:
        assert d.reason == "rate_limited" and d.count == len(ts) <= max_count and d.source == "mqtt"
    assert decode_batch(encode_batch([d for d, _ in out])) == [d for d, _ in out]  # survives the wire


def test_bridge_handle_sends_the_excess_of_one_sensor_to_dead_letters() -> None:
    s = SETTINGS.model_copy(update={"sensor_max_rate_hz": 1.0, "sensor_rate_burst": 3})
    bridge = Bridge(s, {"N1": SensorInfo("noise"), "N2": SensorInfo("noise")}, clock=lambda: NOW)
    for i in range(10):
        for sid in ("N1", "N2") if i < 3 else ("N1",):
            raw = json.dumps({"sensor_id": sid, "ts": _ts_text(NOW - timedelta(seconds=60 - i)), "seq": i,
                              "metrics": {"laeq_dba": 50.0}}).encode()
            bridge.handle(f"khanhhoa/v1/noise/{sid}", raw, AckToken(0, i * 2 + (sid == "N2")))
    assert bridge.stats.valid == 6 and bridge.stats.by_reason["rate_limited"] == 7
    letters = bridge.dead + bridge.excess.drain()
    assert [(d.reason, d.count, len(t)) for d, t in letters] == [("rate_limited", 7, 7)]
    assert letters[0][0].topic == "khanhhoa/v1/noise/N1"


def test_a_gauge_at_its_first_alarm_level_is_sent_at_once_with_the_readings_before_it() -> None:
    """Routine readings wait for their envelope to fill or age; a gauge at or above BĐ I closes its
    partition's envelope at once (in order), so an early warning does not wait out the batching."""
    levels = {"bd1": 8.0, "bd2": 9.5, "bd3": 11.0}
    sensors = {f"G{i}": SensorInfo("water_level", urgent_level("water_level", levels)) for i in range(40)}
    bridge = Bridge(SETTINGS, sensors, clock=lambda: NOW)

    def reading(sid: str, level: float, seq: int) -> None:
        raw = json.dumps({"sensor_id": sid, "ts": _ts_text(NOW - timedelta(seconds=30)), "seq": seq,
                          "metrics": {"water_level_m": level}}).encode()
        bridge.handle(f"khanhhoa/v1/water_level/{sid}", raw, AckToken(0, seq))

    for i in range(40):
        reading(f"G{i}", 7.99, i)  # just below BĐ I: routine
    assert bridge._ready.empty() and bridge.batcher.pending == 40
    part = partition_for("G7", SETTINGS.kafka_partitions)
    before = [r.sensor_id for b in bridge.batcher.drain() if b.partition == part for r in b.items]
    for i in range(40):
        reading(f"G{i}", 7.99, 100 + i)
    reading("G7", 8.0, 200)
    sent = bridge._ready.get_nowait()
    assert bridge._ready.empty() and sent.partition == part and bridge.stats.urgent == 1
    assert [r.sensor_id for r in sent.items] == [*before, "G7"]  # the partition's order is kept
    assert [t.mid for t in sent.acks] == [100 + int(s[1:]) for s in before] + [200]
    assert bridge.batcher.pending == 40 - len(before)  # other partitions keep batching


def test_bridge_keeps_only_a_sample_of_an_oversize_payload() -> None:
    bridge = Bridge(SETTINGS, {}, clock=lambda: NOW)
    bridge.handle("khanhhoa/v1/noise/N1", b"x" * 1_000_000, AckToken(0, 1))
    (letter, tokens), = bridge.dead
    assert letter.reason == "too_large" and len(letter.raw) == SETTINGS.max_payload_bytes and tokens == (AckToken(0, 1),)


# ---------------------------------------------------------------- SQL only in the storage layer
SQL_START = ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM", "CREATE ", "ALTER TABLE", "DROP ", "TRUNCATE ")


@pytest.mark.parametrize("package", ["streams", "detectors", "sensors_sim"])
def test_no_sql_text_outside_the_storage_layer(package: str) -> None:
    """SQL lives in ioc/storage, parameterised; elsewhere a string that starts like SQL is a smell."""
    root = Path(__file__).resolve().parents[2] / package
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.lstrip().upper()
                if text.startswith(SQL_START) and (" FROM " in text or " INTO " in text or " SET " in text
                                                   or " TABLE " in text):
                    offenders.append(f"{path.relative_to(root.parent)}:{node.lineno}: {node.value[:60]!r}")
    assert offenders == []


def test_dead_letter_struct_stays_compatible_without_a_count() -> None:
    """A letter from an older bridge (no count) still decodes, as one arrival."""
    old = b'[{"received_at":"2026-11-28T08:00:00Z","source":"mqtt","reason":"bad_json","detail":"x","topic":"t","raw":"eA=="}]'
    (d,) = decode_batch(old)
    assert d.count == 1 and d.raw == b"x"

