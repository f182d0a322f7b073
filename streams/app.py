"""The Faust app: topics, the detector-state table and the agents, built from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import faust

from ioc.settings import Settings
from streams.faust_compat import cap_fetch_wait, check_internals, disable_gap_commits
from streams.topics import TopicNames

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    app: faust.App
    topics: TopicNames
    readings: Any
    deadletter: Any
    findings: Any
    alerts: Any
    detector_state: Any


def create_app(settings: Settings) -> Pipeline:
    settings.require("kafka_url", "database_url", "mqtt_url")
    check_internals()
    cap_fetch_wait(settings.consumer_fetch_max_wait_ms)
    disable_gap_commits()
    names = TopicNames(settings.topic_prefix)
    datadir = settings.data_dir / "faust" / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.kafka_url,
        store="memory://",
        datadir=str(datadir),  # not the working directory
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=1,
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=settings.worker_web_port is not None,
        web_port=settings.worker_web_port or 6066,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout_s / 3),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        table_standby_replicas=settings.table_standby_replicas,
        stream_buffer_maxsize=64,  # envelopes, not readings: bounds memory during a DB outage
    )
    p = settings.kafka_partitions
    pipeline = Pipeline(
        app=app,
        topics=names,
        readings=app.topic(names.readings, value_type=bytes, partitions=p),
        deadletter=app.topic(names.deadletter, value_type=bytes, partitions=settings.deadletter_partitions),
        findings=app.topic(names.findings, value_type=bytes, partitions=p),
        alerts=app.topic(names.alerts, value_type=bytes, partitions=p),
        detector_state=app.Table("detector_state", default=None, partitions=p, value_type=bytes),  # raw codec: see detection.encode_state
    )
    from streams.agents_alerts import register_alert_agents
    from streams.agents_sink import register_sink_agents

    register_sink_agents(pipeline, settings, register_alert_agents(pipeline, settings).apply)
    return pipeline
