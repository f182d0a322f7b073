"""The registry is reloaded only when it changed: every way of changing ``sensors`` moves its version."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import psycopg

from ioc.settings import Settings
from ioc.storage.db import connect
from ioc.storage.sensors_store import (
    SensorEntry,
    auto_register,
    load_if_changed,
    load_sensor_infos,
    registry_version,
)
from streams.agents_sink import ReadingsSink
from streams.db_worker import DbWorker
from streams.detector_stage import DetectorStage
from streams.pipeline_stats import StageStats


async def _no_send(**_: Any) -> Any:
    raise AssertionError("nothing is sent in this test")


class Counted:
    """``load_sensor_infos`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, conn: psycopg.Connection) -> Any:
        self.calls += 1
        return load_sensor_infos(conn)


def test_every_change_to_sensors_moves_the_version_and_reads_do_not(db_url: str) -> None:
    with connect(db_url, autocommit=True) as conn:
        seen = [registry_version(conn)]
        assert seen[0] is not None

        def moved() -> bool:
            now = registry_version(conn)
            changed = now != seen[0]
            seen[0] = now
            return changed

        load_sensor_infos(conn)
        conn.execute("SELECT count(*) FROM sensors").fetchone()
        assert not moved()  # reads leave it
        auto_register(conn, "RV_NEW", "water_level")
        assert moved()
        conn.execute("UPDATE sensors SET alarm_levels = %s WHERE sensor_id = %s", ('{"bd1": 2.0}', "RV_NEW"))
        assert moved()
        conn.execute("UPDATE sensors SET retired_at = now() WHERE sensor_id = %s", ("RV_NEW",))
        assert moved()
        with conn.cursor() as cur, cur.copy("COPY sensors (sensor_id, kind, name) FROM STDIN") as copy:
            copy.write_row(("RV_COPIED", "rain", "RV_COPIED"))
        assert moved()
        conn.execute("DELETE FROM sensors WHERE sensor_id = %s", ("RV_COPIED",))
        assert moved()
        conn.execute("UPDATE sensors SET name = name WHERE sensor_id = %s", ("NO_SUCH_SENSOR",))
        assert moved()  # a statement that changes no row still counts: cheap, and never misses one


def test_an_unchanged_registry_is_not_loaded_again_and_a_change_is(db_url: str) -> None:
    load = Counted()
    with connect(db_url, autocommit=True) as conn:
        seen, first = load_if_changed(conn, None, load)
        assert first is not None and load.calls == 1
        for _ in range(3):
            seen, again = load_if_changed(conn, seen, load)
            assert again is None
        assert load.calls == 1
        auto_register(conn, "RV_LATE", "rain")
        seen, fresh = load_if_changed(conn, seen, load)
        assert fresh is not None and "RV_LATE" in fresh and load.calls == 2
        assert load_if_changed(conn, seen, load)[1] is None


def test_a_change_committed_between_the_version_and_the_rows_is_loaded_again(db_url: str) -> None:
    """The version is read first: a change that lands after it is in the rows, and the next call
    loads once more (its version moved past the one returned) instead of missing it."""
    with connect(db_url, autocommit=True) as conn, connect(db_url, autocommit=True) as other:
        def load_with_a_change_in_between(c: psycopg.Connection) -> Any:
            auto_register(other, "RV_BETWEEN", "noise")
            return load_sensor_infos(c)

        seen, rows = load_if_changed(conn, None, load_with_a_change_in_between)
        assert rows is not None and "RV_BETWEEN" in rows
        seen, again = load_if_changed(conn, seen, load_sensor_infos)
        assert again is not None  # once more, not skipped
        assert load_if_changed(conn, seen, load_sensor_infos)[1] is None


def test_the_workers_first_load_records_the_version_so_its_refresh_waits_for_a_change(db_url: str) -> None:
    """The worker builds its detectors from a first load; the 10 s refresh must not load the same
    registry again (it did once per worker start), and must load it after a change."""
    settings = Settings(mqtt_url="mqtt://u:p@127.0.0.1:1", kafka_url="kafka://127.0.0.1:1", kafka_partitions=1)

    class CountedStage(DetectorStage):
        def __init__(self) -> None:
            super().__init__(settings, {}, _no_send, StageStats("test"), "readings")
            self.updates: list[int] = []

        def update_registry(self, sensors: dict[str, SensorEntry]) -> None:
            self.updates.append(len(sensors))
            super().update_registry(sensors)

    async def scenario() -> list[int]:
        db = DbWorker(db_url, "registry-test")
        stage = CountedStage()
        sink = ReadingsSink(settings, db, None, stage, StageStats("test"), "readings")  # type: ignore[arg-type]
        try:
            await sink._detect([], datetime.now(UTC))
            assert stage.bank is not None and sink.registry_seen is not None
            await sink.refresh_registry()
            await sink.refresh_registry()
            assert stage.updates == []  # unchanged: not loaded again
            with connect(db_url, autocommit=True) as conn:
                auto_register(conn, "RV_WORKER", "rain")
            await sink.refresh_registry()
            await sink.refresh_registry()
            return stage.updates
        finally:
            db.close()

    updates = asyncio.run(scenario())
    assert len(updates) == 1 and updates[0] >= 1  # the change, loaded once
