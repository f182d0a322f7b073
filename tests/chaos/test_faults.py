"""Scripted faults against a real local stack while a flood streams: nothing lost, nothing doubled.

Every test streams the same labelled flood (sensors_sim ``demo``: a flash flood that crosses BĐ
I/II/III, with malformed payloads) through a private pipeline, breaks one thing mid-stream and
checks the end state against the data sent, the in-process detector run and a fault-free
reference run (see :mod:`tests.chaos.harness`). Recovery times go to the session's table.

What survives a Kafka broker crash here: the local stack's broker is Tansu with **memory
storage**, so a Tansu crash loses every topic, every record not yet consumed and every committed
offset. What must still hold, and is asserted: the bridge acknowledges an MQTT message only after
Kafka acknowledged it, so whatever the broker had not acknowledged is redelivered by Mosquitto's
persistent session and stored exactly once after the broker is back; the pipeline carries on
without a manual step; roll-ups stay exact; no alert transition is recorded twice and every
notification is delivered. What is expected to be lost, and only that: readings Kafka had
acknowledged but the worker had not committed to PostgreSQL when the broker died (and the findings
of those readings, and the findings topic itself). A production Kafka with replicated, on-disk
logs keeps all of that; see tests/chaos/README.md.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ioc.stack.services import Service, pg_ctl, restart_mosquitto
from ioc.stack.stack import StackState
from tests.chaos.harness import (
    SESSION_TIMEOUT_S,
    ChaosRun,
    Flood,
    Outcome,
    group_members,
    kill_service,
    new_database,
    transitions_diff,
)
from tests.support import restart_tansu, wait_for

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(1200)]

#: restarted at once, or after the old member's group session has expired
DELAYS = {"at_once": 0.0, "after_session_timeout": SESSION_TIMEOUT_S + 5}
KILL_AT = 0.3  # the fault lands when this share of the flood is stored


def _verify(run: ChaosRun, ref: Outcome, row: dict[str, Any], *, findings: bool = True) -> Outcome:
    """The end state every fault must leave: exact data, the reference's alerts, all notified."""
    out = run.outcome(with_findings=findings)
    row.update(lost_rows=out.missing_rows, duplicated=out.unexpected_rows + out.rollup_mismatches,
               findings_reemitted=out.findings_reemitted, outbox=out.outbox)
    missing, extra = transitions_diff(out.alerts, ref.alerts)
    row.update(alerts_missing=len(missing), alerts_extra=len(extra),
               incidents_unlike_reference={k: (n, ref.incidents.get(k)) for k, n in out.incidents.items()
                                           if n != ref.incidents.get(k)})
    assert run.alive(), "a process died:\n" + run.logs()
    assert out.missing_rows == 0, f"{out.missing_rows} readings lost\n{run.logs()}"
    assert out.unexpected_rows == 0, f"{out.unexpected_rows} readings not sent"
    assert out.rollup_mismatches == 0, f"readings_1m differs from a GROUP BY over readings in {out.rollup_mismatches} rows"
    if findings:
        assert out.findings is not None and out.findings.agree, out.findings.to_json()
    assert not out.duplicate_transitions, f"alert transitions recorded twice: {out.duplicate_transitions}"
    assert (missing, extra) == ([], []), f"alerts differ from the fault-free run: missing {missing}, extra {extra}"
    _assert_notified(out)
    row["probe_s"] = run.probe()
    return out


def _assert_notified(out: Outcome) -> None:
    assert out.outbox > 0
    assert not out.undelivered, f"{len(out.undelivered)} notifications never delivered"
    assert not out.mqtt_unseen, f"{len(out.mqtt_unseen)} MQTT notifications delivered but never seen by a subscriber"
    assert not out.webhook_unseen, f"{len(out.webhook_unseen)} webhook notifications never received"


@pytest.fixture
def run(chaos_stack: StackState, flood: Flood, tmp_path: Path, reference: Outcome) -> Any:
    r = ChaosRun(chaos_stack, flood, tmp_path)
    try:
        r.warm_up()
        yield r
    finally:
        r.close()


# -- process crashes -------------------------------------------------------------------------------

@pytest.mark.parametrize("when", list(DELAYS))
def test_worker_sigkill(run: ChaosRun, reference: Outcome, record: dict[str, Any], when: str) -> None:
    record["fault"] = f"worker SIGKILL, restart {when.replace('_', ' ')}"
    run.stream()
    run.wait_stored(KILL_AT)
    run.p.procs.kill("worker0", signal.SIGKILL)
    time.sleep(DELAYS[when])
    mark = run.mark()
    run.p.start_worker(0)
    record.update(run.recovery(mark))
    run.finish()
    _verify(run, reference, record)


@pytest.mark.parametrize("when", list(DELAYS))
def test_bridge_sigkill(run: ChaosRun, reference: Outcome, record: dict[str, Any], when: str) -> None:
    """The bridge dies holding MQTT messages it had not acknowledged: the persistent session has them."""
    record["fault"] = f"bridge SIGKILL, restart {when.replace('_', ' ')}"
    run.stream()
    run.wait_stored(KILL_AT)
    run.p.procs.kill("bridge0", signal.SIGKILL)
    time.sleep(DELAYS[when])
    mark = run.mark()
    run.p.start_bridge(0)
    record.update(run.recovery(mark))
    run.finish()
    _verify(run, reference, record)


@pytest.mark.parametrize("when", list(DELAYS))
def test_mosquitto_sigkill(run: ChaosRun, chaos_stack: StackState, reference: Outcome, record: dict[str, Any],
                           when: str) -> None:
    """SIGKILL, not SIGTERM: Mosquitto has no chance to write its persistence file on the way out."""
    record["fault"] = f"Mosquitto SIGKILL, restart {when.replace('_', ' ')}"
    run.stream()
    run.wait_stored(KILL_AT)
    old = chaos_stack.services["mosquitto"]
    kill_service(old.pid)
    time.sleep(DELAYS[when])
    mark = run.mark()
    chaos_stack.services["mosquitto"] = restart_mosquitto(old)
    chaos_stack.save()
    record.update(run.recovery(mark))
    run.finish()
    _verify(run, reference, record)


@pytest.mark.parametrize("when", list(DELAYS))
def test_tansu_sigkill(run: ChaosRun, chaos_stack: StackState, flood: Flood, reference: Outcome,
                       record: dict[str, Any], when: str) -> None:
    """The broker crashes and comes back empty. Asserted: what arrives after it is back is stored
    exactly once, with what the bridge had not had acknowledged; roll-ups exact; no alert
    transition twice; every notification delivered; no manual step. Allowed to be lost (memory
    storage): readings Kafka held for the worker at the crash, and the findings topic."""
    record["fault"] = f"Tansu SIGKILL, restart {when.replace('_', ' ')}"
    run.stream()
    run.wait_stored(KILL_AT)
    old = chaos_stack.services["tansu"]
    kill_service(old.pid)
    stored_at_crash = run.stored()
    time.sleep(DELAYS[when])
    mark = run.mark()
    _t, sent_at_restart, acked_at_restart = mark  # every message after sent_at_restart meets a live broker
    chaos_stack.services["tansu"] = restart_tansu(old)
    chaos_stack.save()
    record.update(run.recovery(mark))
    run.finish(stall_s=60)
    out = run.outcome(with_findings=False)  # the findings topic died with the broker
    lost = out.missing_rows
    record.update(lost_rows=lost, duplicated=out.unexpected_rows + out.rollup_mismatches, outbox=out.outbox,
                  stored_at_crash=stored_at_crash, acked_at_restart=acked_at_restart,
                  checked_after_restart=len(flood.keys) - sent_at_restart)
    assert run.alive(), "a process died:\n" + run.logs()
    assert out.unexpected_rows == 0 and out.rollup_mismatches == 0
    # Everything published after the broker came back (and what Mosquitto was still holding) is stored.
    stored = {(s, ts) for s, _m, ts, _v in _stored_rows(run.db)}
    later = [k for k in flood.keys[sent_at_restart:] if k is not None]
    not_stored_later = [k for k in later if k not in stored]
    record["lost_after_restart"] = len(not_stored_later)
    assert not not_stored_later, f"{len(not_stored_later)} readings sent after the broker came back are missing"
    assert not out.duplicate_transitions, out.duplicate_transitions
    _assert_notified(out)
    record["probe_s"] = run.probe()


def _stored_rows(db: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db, autocommit=True) as conn:
        return conn.execute("SELECT sensor_id, metric, ts, value FROM readings").fetchall()


# -- the database ----------------------------------------------------------------------------------

def test_postgres_stopped_for_60_s(run: ChaosRun, chaos_stack: StackState, reference: Outcome,
                                   record: dict[str, Any]) -> None:
    record["fault"] = "PostgreSQL stopped for 60 s"
    run.stream()
    run.wait_stored(KILL_AT)
    pg = chaos_stack.services["postgres"]
    pg_ctl(pg, "stop")
    try:
        time.sleep(60)
        assert run.alive(), "a process crashed during the outage:\n" + run.logs()
    finally:
        mark = run.mark()
        pg_ctl(pg, "start")
    chaos_stack.services["postgres"] = _with_new_pid(pg)
    chaos_stack.save()
    record.update(run.recovery(mark))
    run.finish()
    _verify(run, reference, record)


def _with_new_pid(pg: Service) -> Service:
    pid = int((Path(pg.data_dir) / "data" / "postmaster.pid").read_text().splitlines()[0])
    return Service(pg.name, pid, pg.url, pg.log, pg.data_dir)


DISK_MB = 96  # room for the flood's database; the filler takes the rest


@pytest.fixture
def full_disk(chaos_stack: StackState, tmp_path: Path) -> Any:
    """A tablespace on a small tmpfs: the test database's data files live there, so filling the
    filesystem makes PostgreSQL fail to extend them ("could not extend file ... No space left
    on device"), while the WAL and the catalogue stay on the main data directory."""
    import pwd

    mnt = Path(f"/tmp/ioc-chaos-disk-{tmp_path.name}")
    mnt.mkdir(exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the disk-full test (needs root): {res.stderr}")
    pw = pwd.getpwnam("postgres")
    space = mnt / "pg"
    space.mkdir()
    import os

    os.chown(space, pw.pw_uid, pw.pw_gid)
    os.chown(mnt, pw.pw_uid, pw.pw_gid)
    ts_name = f"chaos_{tmp_path.name[-8:].replace('-', '_')}".lower()
    admin = chaos_stack.urls["IOC_DATABASE_URL"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE TABLESPACE {ts_name} LOCATION '{space}'")
    try:
        yield ts_name, mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        with contextlib.suppress(OSError):
            mnt.rmdir()


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        block = b"\0" * (1 << 20)
        with contextlib.suppress(OSError):
            while True:
                f.write(block)
                f.flush()
    return filler


def test_disk_full(chaos_stack: StackState, flood: Flood, tmp_path: Path, reference: Outcome,
                   record: dict[str, Any], full_disk: tuple[str, Path]) -> None:
    record["fault"] = "database disk full for 30 s"
    tablespace, mnt = full_disk
    db = new_database(chaos_stack.urls["IOC_DATABASE_URL"], tablespace)
    run = ChaosRun(chaos_stack, flood, tmp_path / "run", db=db)
    try:
        run.warm_up()
        run.stream()
        run.wait_stored(KILL_AT)
        filler = _fill(mnt)
        stored_full = run.stored()
        time.sleep(30)
        record["stored_while_full"] = run.stored() - stored_full
        assert run.alive(), "a process crashed on the full disk:\n" + run.logs()
        mark = run.mark()
        filler.unlink()
        record.update(run.recovery(mark))
        run.finish()
        _verify(run, reference, record)
    finally:
        run.close()
        with psycopg.connect(chaos_stack.urls["IOC_DATABASE_URL"], autocommit=True) as conn:
            from psycopg import sql

            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db.rsplit("/", 1)[1])))
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("DROP TABLESPACE {}").format(sql.Identifier(tablespace)))


# -- a paused worker -------------------------------------------------------------------------------

def test_worker_paused_until_it_loses_its_group_membership(run: ChaosRun, chaos_stack: StackState,
                                                         reference: Outcome, record: dict[str, Any]) -> None:
    """SIGSTOP a worker, then SIGCONT it once the group has dropped it.

    Tansu drops a silent member only when the group rebalances (checked: paused 36 s, 3.6 times
    the session timeout, it stayed a member of a Stable group), so a second worker joins while the
    first is stopped, as a replacement would; the broker evicts the stopped one once its session
    expires. Resumed, it finds its member id unknown and rejoins: whatever it had in flight must
    neither be lost nor applied twice."""
    record["fault"] = "worker SIGSTOP until evicted, SIGCONT"
    kafka, group = chaos_stack.urls["IOC_KAFKA_URL"], run.p.env["IOC_APP_ID"]
    (paused,) = group_members(kafka, group)
    run.stream()
    run.wait_stored(KILL_AT)
    run.pause_worker()
    t_pause = time.monotonic()
    try:
        run.p.start_worker(1)
        wait_for(lambda: paused not in group_members(kafka, group), 180, "the stopped worker leaving the group",
                 interval_s=1)
        record["evicted_after_s"] = time.monotonic() - t_pause
        mark = run.mark()
    finally:
        run.resume_worker()
    record.update(run.recovery(mark))
    run.finish()
    _verify(run, reference, record)
