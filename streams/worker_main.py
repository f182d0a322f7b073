"""Process entry for `ioc worker`: check the services, then run the Faust worker."""

from __future__ import annotations

import asyncio
import logging

from ioc.settings import Settings
from ioc.storage.db import connect
from streams.kafka_admin import ensure_topics
from streams.topics import TopicNames

log = logging.getLogger(__name__)


def run_worker(settings: Settings, loglevel: str = "WARNING") -> None:
    import faust

    from streams.app import create_app

    settings.require("kafka_url", "database_url", "mqtt_url")
    assert settings.database_url is not None and settings.kafka_url is not None
    connect(settings.database_url).close()  # fail fast, naming the URL, before Faust starts
    names = TopicNames(settings.topic_prefix)
    asyncio.run(ensure_topics(settings.kafka_url, names.layout_for(settings)))
    pipeline = create_app(settings)
    worker = faust.Worker(pipeline.app, loglevel=loglevel, quiet=True, override_logging=False)
    worker.execute_from_commandline()
