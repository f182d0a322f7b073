"""Process entry for `ioc bridge`: load the registry, run the bridge until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import datetime
from functools import partial
from pathlib import Path

from ioc.settings import Settings
from ioc.storage.db import SharedConnection
from ioc.storage.sensors_store import auto_register, load_if_changed, load_sensor_infos
from ioc.wire import SensorInfo
from streams.bridge import Bridge, BridgeStats
from streams.pipeline_stats import write_stats

log = logging.getLogger(__name__)


async def serve(
    settings: Settings, stop: asyncio.Event | None = None, ready_file: Path | None = None, *, retire: bool = False
) -> BridgeStats:
    settings.require("mqtt_url", "kafka_url", "database_url")
    assert settings.database_url is not None
    db = SharedConnection(settings.database_url)  # one connection, not one per call
    version, loaded = db.run(partial(load_if_changed, seen=None, load=load_sensor_infos))
    sensors = loaded or {}
    seen = [version]
    log.info("bridge: %d registered sensors, auto-register=%s", len(sensors), settings.auto_register)

    def register(sensor_id: str, kind: str) -> None:
        db.run(partial(auto_register, sensor_id=sensor_id, kind=kind))

    def reload() -> dict[str, SensorInfo] | None:
        """None while the registry is unchanged (see ``load_if_changed``)."""
        seen[0], fresh = db.run(partial(load_if_changed, seen=seen[0], load=load_sensor_infos))
        return fresh

    def write_metrics(rows: list[tuple[datetime, str, str, str, float]]) -> None:
        db.run(partial(write_stats, rows=rows))

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bridge = Bridge(settings, sensors, on_unknown_sensor=register, reload_sensors=reload,
                    write_metrics=write_metrics)
    ready = asyncio.Event()

    async def announce() -> None:
        await ready.wait()
        log.info("bridge subscribed and ready")
        if ready_file is not None:
            ready_file.write_text("ready\n")

    announcer = asyncio.create_task(announce())
    try:
        stats = await bridge.run(stop, ready, retire_now=retire)
    finally:
        announcer.cancel()
        db.close()
    log.info("bridge stopped: received=%d valid=%d rejected=%d acked=%d envelopes=%d reasons=%s",
             stats.received, stats.valid, stats.rejected, stats.acked, stats.envelopes, dict(stats.by_reason))
    return stats
