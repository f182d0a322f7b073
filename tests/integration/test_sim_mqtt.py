"""Publishing, recording and replay against a real Mosquitto (the session stack's).

The simulator publishes as ``ioc-sim`` (``sim_mqtt_url``), the only account it has in production;
the recorder listens as the local observer (``mqtt_url``), since ``ioc-sim`` may read nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from sensors_sim.api import publish_scenario
from sensors_sim.engine import simulate
from sensors_sim.fileio import Message, Writer, encode_lines, read
from sensors_sim.output import write_simulation
from sensors_sim.recorder import Recorder
from sensors_sim.replay import replay
from tests.support import publish, wait_for_quiet_cpu

pytestmark = pytest.mark.integration


def _collect(rec: Recorder, n: int, timeout: float = 60.0) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += rec.take()
        time.sleep(0.02)
    time.sleep(0.3)
    return got + rec.take()


def test_publish_demo_counts_acks_and_keeps_ts_behind_the_clock(mqtt_url: str, sim_mqtt_url: str,
                                                                tmp_path: Path) -> None:
    sim = simulate("demo")
    rec = Recorder(mqtt_url)
    rec.wait_subscribed()
    try:
        res = publish_scenario("demo", sim_mqtt_url, fit_seconds=3.0, labels_out=tmp_path / "demo.labels.json")
        got = _collect(rec, sim.n_messages)
    finally:
        rec.close()
    bad = next(lab for lab in sim.labels if lab["kind"] == "malformed")["count"]
    assert res.published == sim.n_messages == len(got)
    assert res.malformed == bad and res.valid == res.published - bad
    labels = json.loads((tmp_path / "demo.labels.json").read_text(encoding="utf-8"))
    assert any(lab["kind"] == "flood" for lab in labels)
    late = 0
    for m in got:
        try:
            ts = datetime.fromisoformat(json.loads(m.payload)["ts"])
        except (ValueError, KeyError, TypeError):
            continue  # malformed on purpose
        late += ts.timestamp() > m.t + 1.0
    assert late == 0


def _replay_and_stamp(path: Path, n: int, mqtt_url: str, sim_mqtt_url: str) -> list[float]:
    """Replay ``path`` at x10 and return the arrival times of its ``n`` messages.

    Both run as processes of their own, as engineers run them: in this one, the publisher's and the
    stamping thread would share one GIL (whose 5 ms switch interval is the tolerance itself) and this
    process's large heap (a full collection stalled CI's deliveries by 50-200 ms).
    """
    env = {**os.environ, "NO_COLOR": "1"}
    clock = subprocess.Popen([sys.executable, "-m", "tests.arrival_clock", mqtt_url, "khanhhoa/v1/rain/TIMING_PROBE",
                              str(n + 1)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert clock.stdout is not None
        assert clock.stdout.readline().strip() == "ready"
        # Warm the stamping subscriber's path first, so its first-delivery cost is not counted.
        assert publish(sim_mqtt_url, [("khanhhoa/v1/rain/TIMING_PROBE", b"warm-up")]) == 1
        subprocess.run([sys.executable, "-m", "ioc.composition.cli", "replay", str(path), "--speed", "10",
                        "--mqtt-url", sim_mqtt_url], check=True, capture_output=True, timeout=60, env=env)
        out, _ = clock.communicate(timeout=70)
    finally:
        clock.kill()
    stamps = json.loads(out)
    assert len(stamps) == n + 1, f"{len(stamps)} of {n + 1} messages arrived"
    return stamps[1:]


def test_replay_keeps_spacing_within_5_percent_at_x10(mqtt_url: str, sim_mqtt_url: str, tmp_path: Path) -> None:
    gaps = np.tile([1.0, 2.0, 3.0, 1.5], 8)
    t = 1_700_000_000.0 + np.concatenate([[0.0], np.cumsum(gaps)])
    path = tmp_path / "spaced.jsonl.gz"
    payloads = [json.dumps({"sensor_id": "TIMING_PROBE", "i": i}).encode() for i in range(len(t))]
    with Writer(path) as w:
        w.write(encode_lines(t.tolist(), ["khanhhoa/v1/rain/TIMING_PROBE"] * len(t), payloads, [True] * len(t)), len(t))
    expected = gaps / 10.0
    attempts: list[tuple[str, np.ndarray]] = []
    kept_spacing = False
    # The replay's pacing is deterministic; one delivery held up 40-50 ms by the shared 2-core machine
    # (seen in CI: one gap long, the next short by as much) is not. A replay that paces wrongly fails
    # every attempt; up to three attempts tell the two apart.
    for _ in range(3):
        # The session's pipeline may still be digesting the demo the test before published.
        load = wait_for_quiet_cpu()
        arrived = np.diff(_replay_and_stamp(path, len(t), mqtt_url, sim_mqtt_url))
        attempts.append((f"machine load before: {load:.2f} cores", np.round(arrived / expected, 3)))
        kept_spacing = bool(np.all(np.abs(arrived - expected) <= 0.05 * expected))
        if kept_spacing:
            break
    # arrival gap / recorded gap, per attempt, in full (a repr would be cut where the outlier is)
    assert kept_spacing, "\n".join(f"{why}: {' '.join(f'{r:.3f}' for r in ratios)}" for why, ratios in attempts)


def test_record_then_replay_gives_the_same_readings(mqtt_url: str, sim_mqtt_url: str, tmp_path: Path) -> None:
    sim = simulate("sensor_faults")
    original = tmp_path / "sim.jsonl.gz"
    write_simulation(sim, original)
    sent = [(m.topic, m.payload) for m in read(original)]

    def replay_and_record(src: Path, dst: Path) -> list[tuple[str, bytes]]:
        rec = Recorder(mqtt_url)
        rec.wait_subscribed()
        try:
            counts = replay(src, sim_mqtt_url, speed=None)
            got = _collect(rec, len(sent))
        finally:
            rec.close()
        assert counts.published == len(sent)
        with Writer(dst) as w:
            w.write(encode_lines([m.t for m in got], [m.topic for m in got], [m.payload for m in got],
                                 [b"\n" not in m.payload and _is_json(m.payload) for m in got]), len(got))
        return [(m.topic, m.payload) for m in read(dst)]

    first = replay_and_record(original, tmp_path / "rec1.jsonl.gz")
    assert first == sent
    second = replay_and_record(tmp_path / "rec1.jsonl.gz", tmp_path / "rec2.jsonl.gz")
    assert second == sent


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except ValueError:
        return False
    return True


def test_recording_has_receive_times(mqtt_url: str) -> None:
    rec = Recorder(mqtt_url, "khanhhoa/v1/noise/RECV_PROBE")
    rec.wait_subscribed()
    try:
        rec.client.publish("khanhhoa/v1/noise/RECV_PROBE", b"{}", qos=1)
        got = _collect(rec, 1, timeout=10)
    finally:
        rec.close()
    assert len(got) == 1 and abs(got[0].t - datetime.now(UTC).timestamp()) < 10


def test_a_publish_the_broker_never_acknowledges_fails_and_says_how_much(tmp_path: Path) -> None:
    """`ioc simulate` and `ioc replay` end with Publisher.finish: a broker that stops answering must
    turn into an error naming the missing acknowledgements, not a run reported as complete."""
    import signal

    from ioc.stack.process import stop_pid
    from ioc.stack.services import start_mosquitto
    from sensors_sim.clock import Pacer
    from sensors_sim.encode import Chunk
    from sensors_sim.errors import PublishIncomplete
    from sensors_sim.publisher import Publisher

    svc = start_mosquitto(tmp_path / "mosquitto")
    chunk = Chunk(emit=[0.0] * 5, topics=["khanhhoa/v1/rain/RAIN_X"] * 5, payloads=[b"{}"] * 5, malformed=[False] * 5)
    try:
        pub = Publisher(svc.url)
        try:
            pub.publish_chunks([chunk], Pacer(v0=0.0, speed=None))
            pub.finish(timeout=10.0)  # the control: an answering broker owns all five
            assert pub.counts.published == 5
            os.kill(svc.pid, signal.SIGSTOP)
            try:
                pub.publish_chunks([chunk], Pacer(v0=0.0, speed=None))
                with pytest.raises(PublishIncomplete, match=r"5 of 10 message\(s\) were not acknowledged") as e:
                    pub.finish(timeout=1.0)
                password = svc.url.split("@")[0].rsplit(":", 1)[1]
                assert password not in str(e.value)  # the broker is named, its password is not
            finally:
                os.kill(svc.pid, signal.SIGCONT)
        finally:
            pub.close()
    finally:
        stop_pid(svc.pid)
