"""Programmatic entry points used by the ``ioc`` CLI and ``ioc demo``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensors_sim import labels as labelling
from sensors_sim.clock import Pacer, live_offset
from sensors_sim.encode import iter_chunks
from sensors_sim.engine import Simulation, simulate
from sensors_sim.errors import ScenarioError
from sensors_sim.publisher import Publisher

#: The pipeline rejects readings older than 7 days; leave an hour of margin for slow publishing.
MAX_LIVE_SPAN_S = 7 * 86400 - 3600


@dataclass(frozen=True)
class PublishResult:
    published: int
    valid: int
    malformed: int
    labels_path: Path | None
    labels: list[dict[str, Any]]
    offset_s: int = 0  # what was added to every scenario timestamp (the live rebase)


def publish_simulation(
    sim: Simulation,
    mqtt_url: str,
    *,
    speed: float | None = None,
    fit_seconds: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    labels_out: Path | None = None,
    ack_timeout: float = 120.0,
    align_s: int | None = None,
) -> PublishResult:
    """Publish an already simulated run live, rebased so no timestamp is ahead of the wall clock.

    ``align_s`` rounds the rebase down to a multiple of it (a week keeps hour-of-week and local
    time of day as in the scenario, so detectors that follow the clock decide as they would have);
    timestamps then lie further in the past, so the bridge's late bound must allow for it.
    """
    sc = sim.scenario
    if fit_seconds is not None:
        if fit_seconds <= 0:
            raise ScenarioError(f"fit_seconds must be > 0, got {fit_seconds}")
        speed = (sc.t1 - sc.t0) / fit_seconds
    if speed is not None and speed <= 0:
        raise ScenarioError(f"speed must be > 0 or None (as fast as possible), got {speed}")
    if sc.t1 - sc.t0 > MAX_LIVE_SPAN_S:
        raise ScenarioError(
            f"scenario {sc.name!r} spans {sc.duration_h:g} h; live publishing needs <= 7 days "
            "because the pipeline rejects readings older than that (write it to a file instead)"
        )
    offset = live_offset(sc.t0, sc.t1, speed, time.time())
    if align_s:
        offset -= offset % align_s
    if labels_out is not None:
        labelling.write(labels_out, sim.labels, offset)
    publisher = Publisher(mqtt_url)
    try:
        pacer = Pacer(v0=sc.t0 + offset, speed=speed)
        publisher.publish_chunks(iter_chunks(sim, offset), pacer, stop=stop, progress=progress)
        publisher.finish(ack_timeout)
        c = publisher.counts
    finally:
        publisher.close()
    return PublishResult(c.published, c.valid, c.malformed, labels_out, labelling.render(sim.labels, offset), offset)


def publish_scenario(
    name: str,
    mqtt_url: str,
    *,
    speed: float | None = None,
    seed: int | None = None,
    fit_seconds: float | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
    labels_out: Path | None = None,
    reporting: str | None = None,
) -> PublishResult:
    """Simulate scenario ``name`` and publish it to ``mqtt_url`` at QoS 1.

    ``speed`` None publishes as fast as possible; ``fit_seconds`` picks the speed so publishing
    takes about that long. Timestamps are rebased so each is <= the wall clock when sent.
    ``reporting`` runs the scenario under that reporting profile (the same as ``name@PROFILE``).
    """
    sim = simulate(name, seed, reporting=reporting)
    return publish_simulation(
        sim, mqtt_url, speed=speed, fit_seconds=fit_seconds, stop=stop, progress=progress, labels_out=labels_out
    )
