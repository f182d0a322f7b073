"""Seed the sensor registry (data in sensors_sim) into the database."""

from __future__ import annotations

from ioc.storage.db import connect
from ioc.storage.sensors_store import upsert_sensors


def seed_registry(database_url: str) -> int:
    from sensors_sim.registry import load_registry

    with connect(database_url) as conn:
        return upsert_sensors(conn, load_registry())
