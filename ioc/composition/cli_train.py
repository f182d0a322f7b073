"""``ioc train``: fit one sensor's IsolationForest offline and write the model file the worker loads.

History comes from a file (a ``.jsonl.gz`` recording from ``ioc record`` / ``ioc simulate``, or a
CSV) or from the ``readings`` table. Training itself lives in :mod:`ioc.anomaly_model`; this module
only gathers rows and reports.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

from ioc.domain import KIND_METRICS
from ioc.errors import IocError, PayloadRejected

log = logging.getLogger(__name__)
option = functools.partial(click.option, show_envvar=True)
Rows = list[tuple[datetime, dict[str, float]]]
#: Kinds whose readings follow the clock: the model also sees the local hour (sin/cos).
CLOCK_KINDS = frozenset({"traffic", "air", "noise", "weather"})


class TrainingDataError(IocError):
    """The history given to ``ioc train`` cannot be used (empty, several sensors, unreadable)."""


def _aware(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as e:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time such as 2025-11-01T00:00:00+07:00",
                                 param_hint=name) from e
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _in_window(ts: datetime, since: datetime | None, until: datetime | None) -> bool:
    return (since is None or ts >= since) and (until is None or ts < until)


def infer_kind(metrics: Iterable[str]) -> str | None:
    """The one sensor kind whose metrics include all of these, if exactly one does.

    >>> infer_kind(["pm25", "no2"]), infer_kind(["speed_kmh"]), infer_kind(["nope"])
    ('air', 'traffic', None)
    """
    names = set(metrics)
    kinds = [k for k, ms in KIND_METRICS.items() if names and names <= set(ms)]
    return kinds[0] if len(kinds) == 1 else None


def rows_from_recording(path: Path, sensor_id: str | None) -> tuple[str, str | None, Rows]:
    """(sensor, kind, rows) from a recording; malformed payloads are skipped and counted."""
    from ioc.wire import PayloadV1, parse_topic
    from sensors_sim.fileio import read

    decoder = msgspec.json.Decoder(PayloadV1)
    by_sensor: dict[str, tuple[str, Rows]] = {}
    skipped = 0
    for msg in read(path):
        try:
            kind, sid = parse_topic(msg.topic)
        except PayloadRejected:
            skipped += 1
            continue
        if sensor_id is not None and sid != sensor_id:
            continue
        try:
            p = decoder.decode(msg.payload)
        except msgspec.DecodeError:
            skipped += 1
            continue
        if p.ts.tzinfo is None:
            skipped += 1
            continue
        by_sensor.setdefault(sid, (kind, []))[1].append((p.ts.astimezone(UTC), dict(p.metrics)))
    if skipped:
        log.info("%s: skipped %d malformed or off-topic messages", path, skipped)
    return _one_sensor(path, sensor_id, {s: (k, r) for s, (k, r) in by_sensor.items()})


def rows_from_csv(path: Path, sensor_id: str | None) -> tuple[str, str | None, Rows]:
    """Long (``ts,sensor_id,metric,value``) or wide (``ts[,sensor_id],<metric>...``) CSV; ``timestamp`` also works."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            time_col = next((f for f in ("ts", "timestamp", "time") if f in fields), None)
            if time_col is None:
                raise TrainingDataError(f"{path}: no time column (ts or timestamp) in header {fields}")
            long = "metric" in fields and "value" in fields
            metric_cols = [f for f in fields if f not in {time_col, "sensor_id", "kind", "seq", "metric", "value"}]
            by_sensor: dict[str, tuple[str | None, dict[datetime, dict[str, float]]]] = {}
            for lineno, raw in enumerate(reader, 2):
                rec = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                sid = rec.get("sensor_id") or (sensor_id or "")
                if sensor_id is not None and sid != sensor_id:
                    continue
                try:
                    ts = datetime.fromisoformat(rec[time_col].replace("Z", "+00:00"))
                except ValueError as e:
                    raise TrainingDataError(f"{path}:{lineno}: bad time {rec[time_col]!r}") from e
                ts = (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)
                values = {rec["metric"]: rec["value"]} if long else {m: rec[m] for m in metric_cols}
                row = by_sensor.setdefault(sid, (rec.get("kind") or None, {}))[1].setdefault(ts, {})
                for m, v in values.items():
                    try:
                        f = float(v)
                    except ValueError:
                        continue  # blank or text cell: that metric is missing in this row
                    if math.isfinite(f):
                        row[m] = f
    except FileNotFoundError as e:
        raise TrainingDataError(f"{path}: no such file") from e
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TrainingDataError(f"{path}: cannot read CSV: {e}") from e
    sensors: dict[str, tuple[str | None, Rows]] = {}
    for sid, (kind, rows) in by_sensor.items():
        ordered = sorted(rows.items())
        metrics = {m for _, r in ordered for m in r}
        sensors[sid or "UNKNOWN"] = (kind or infer_kind(metrics), ordered)
    return _one_sensor(path, sensor_id, sensors)


def _one_sensor(path: Path, sensor_id: str | None, found: dict[str, Any]) -> tuple[str, str | None, Rows]:
    if not found:
        who = f"sensor {sensor_id}" if sensor_id else "any sensor"
        raise TrainingDataError(f"{path}: no readings of {who}")
    if len(found) > 1:
        raise TrainingDataError(f"{path} holds {len(found)} sensors ({', '.join(sorted(found)[:8])}, …); "
                                "choose one with --sensor")
    sid, (kind, rows) = next(iter(found.items()))
    return sid, kind, rows


def rows_from_db(sensor_id: str, since: datetime | None, until: datetime | None) -> tuple[str | None, Rows]:
    from ioc.settings import load_settings
    from ioc.storage.db import connect
    from ioc.storage.readings_history import load_sensor_history, sensor_kind

    s = load_settings()
    s.require("database_url")
    with connect(s.database_url or "") as conn:
        return sensor_kind(conn, sensor_id), load_sensor_history(conn, sensor_id, since=since, until=until)


@click.command("train")
@option("--from", "source", type=click.Path(path_type=Path, dir_okay=False), default=None, envvar="IOC_TRAIN_FROM",
        help="History file: a .jsonl.gz recording (ioc record / ioc simulate) or a CSV "
             "(ts,sensor_id,metric,value or ts,<metric>,...).")
@option("--from-db", is_flag=True, default=False, help="Read the sensor's history from PostgreSQL (IOC_DATABASE_URL).")
@option("--sensor", "sensor_id", default=None, envvar="IOC_TRAIN_SENSOR",
        help="Sensor to train for; required with --from-db or when the file holds several sensors.")
@option("--since", default=None, help="Only history at or after this ISO 8601 time (UTC if no offset).")
@option("--until", default=None, help="Only history before this ISO 8601 time.")
@option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="Model file to write.")
@option("--trees", type=click.IntRange(1, 1000), default=50, show_default=True,
        help="Trees in the forest (scoring cost grows linearly).")
@option("--max-samples", type=click.IntRange(2, 100_000), default=128, show_default=True,
        help="Samples per tree.")
@option("--quantile", type=click.FloatRange(0.5, 0.999999), default=0.999, show_default=True,
        help="Training-score quantile used as the alarm threshold.")
@option("--seed", type=int, default=0, show_default=True, help="Random seed (same data + seed = same model).")
@option("--time-features/--no-time-features", default=None,
        help="Add the local hour (sin/cos) as features; default on for traffic, air, noise and weather.")
def train(source: Path | None, from_db: bool, sensor_id: str | None, since: str | None, until: str | None,
          out: Path, trees: int, max_samples: int, quantile: float, seed: int, time_features: bool | None) -> None:
    """Train one sensor's IsolationForest anomaly model on its normal history and write MODEL."""
    from ioc.anomaly_model import save_model
    from ioc.anomaly_model import train as fit

    if (source is None) == (not from_db):
        raise click.UsageError("give exactly one of --from FILE or --from-db")
    t_since, t_until = _aware(since, "--since"), _aware(until, "--until")
    if from_db:
        if not sensor_id:
            raise click.UsageError("--from-db needs --sensor ID")
        kind, rows = rows_from_db(sensor_id, t_since, t_until)
    else:
        assert source is not None
        reader = rows_from_csv if source.suffix.lower() == ".csv" else rows_from_recording
        sensor_id, kind, rows = reader(source, sensor_id)
    rows = [r for r in rows if _in_window(r[0], t_since, t_until)]
    if not rows:
        raise TrainingDataError(f"no readings of {sensor_id} in the chosen window")
    use_time = (kind in CLOCK_KINDS) if time_features is None else time_features
    am = fit(rows, sensor_id=sensor_id, kind=kind, trained_at=datetime.now(UTC), time_features=use_time,
             n_estimators=trees, max_samples=max_samples, quantile=quantile, seed=seed)
    path = save_model(am, out)
    m = am.metadata
    t = Table(title=f"anomaly model {m.model_id}")
    t.add_column("field")
    t.add_column("value")
    for k, v in (("sensor", m.sensor_id), ("kind", m.kind or "?"), ("features", ", ".join(m.features)),
                 ("readings", str(m.n_samples)), ("from", m.data_from or ""), ("to", m.data_to or ""),
                 ("threshold", f"{m.threshold:.4f}"), ("file", str(path))):
        t.add_row(k, v)
    Console(width=160).print(t)
