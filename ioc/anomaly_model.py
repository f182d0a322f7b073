"""IsolationForest anomaly models: the feature layout, offline training, and the model file.

A model belongs to one sensor and scores that sensor's multivariate readings (its metrics, plus
the local hour of day as sin/cos when the series follows the clock). The file is a joblib dump of
``{"format", "format_version", "metadata", "model"}``; :func:`load_model` names a missing,
unreadable or incompatible file (other format version, other scikit-learn minor version, other
sensor, features that do not match the model) in one clear :class:`AnomalyModelError`, so the
worker can refuse to start with a sentence an operator can act on.

joblib files are pickles: load only model files you produced (``ioc train``). scikit-learn and
joblib are imported lazily, so the detectors can use :func:`feature_row` without loading them.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ioc.domain import KIND_METRICS
from ioc.errors import IocError

FORMAT = "khanhhoa-ioc/anomaly-model"
FORMAT_VERSION = 1
#: Features computed from the reading time (Asia/Ho_Chi_Minh, UTC+7, no DST).
TIME_FEATURES = ("hour_sin", "hour_cos")
LOCAL_UTC_OFFSET_S = 7 * 3600
#: Fewer complete rows than this cannot describe a sensor's normal behaviour.
MIN_TRAINING_ROWS = 50


class AnomalyModelError(IocError):
    """A model file is missing, unreadable or does not fit this build or this sensor."""


@dataclass(frozen=True)
class ModelMetadata:
    sensor_id: str
    features: tuple[str, ...]
    threshold: float  # anomaly score (2^-E[h]/c, in (0, 1]) above which a reading is anomalous
    trained_at: str
    n_samples: int
    sklearn_version: str
    kind: str | None = None
    data_from: str | None = None
    data_to: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    bounds: dict[str, list[float]] = field(default_factory=dict)  # metric -> [min, max] seen in training
    format_version: int = FORMAT_VERSION

    @property
    def model_id(self) -> str:
        """A short stable id of this trained model (sensor, time, features)."""
        raw = f"{self.sensor_id}|{self.trained_at}|{','.join(self.features)}|{self.threshold!r}"
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class AnomalyModel:
    """A fitted ``sklearn.ensemble.IsolationForest`` and what it was trained on."""

    model: Any
    metadata: ModelMetadata


def feature_row(
    epoch_s: float, metrics: Mapping[str, float], features: Sequence[str], utc_offset_s: int = LOCAL_UTC_OFFSET_S
) -> list[float] | None:
    """The model's input for one reading, or None if a feature is missing or not finite.

    >>> [round(v, 6) for v in feature_row(0.0, {"pm25": 12.0}, ("pm25", "hour_sin", "hour_cos"), utc_offset_s=6 * 3600)]
    [12.0, 1.0, -0.0]
    >>> feature_row(0.0, {"pm25": float("nan")}, ("pm25",)) is None
    True
    """
    row: list[float] = []
    for f in features:
        if f == "hour_sin" or f == "hour_cos":
            angle = 2.0 * math.pi * ((epoch_s + utc_offset_s) % 86400.0) / 86400.0
            row.append(math.sin(angle) if f == "hour_sin" else math.cos(angle))
            continue
        v = metrics.get(f)
        if v is None or isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        row.append(float(v))
    return row


def default_features(kind: str | None, metrics: Iterable[str], time_features: bool) -> tuple[str, ...]:
    """Metrics in the canonical order of the kind (then any others sorted), plus time features."""
    names = set(metrics)
    order = [m for m in KIND_METRICS.get(kind or "", {}) if m in names] + sorted(
        names - set(KIND_METRICS.get(kind or "", {}))
    )
    return tuple(order) + (TIME_FEATURES if time_features else ())


def train(
    rows: Iterable[tuple[datetime, Mapping[str, float]]],
    *,
    sensor_id: str,
    trained_at: datetime,
    kind: str | None = None,
    features: Sequence[str] | None = None,
    time_features: bool = True,
    n_estimators: int = 50,  # 50 trees keep scoring ~20 µs/reading in pure Python; 100 is sklearn's default
    max_samples: int = 128,  # per tree; smaller trees are shallower and faster, 256 in the paper
    quantile: float = 0.999,  # training-score quantile used as the threshold; higher = fewer false alarms
    seed: int = 0,
) -> AnomalyModel:
    """Fit an IsolationForest on one sensor's normal history (rows of (ts, metrics))."""
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import IsolationForest

    if n_estimators < 1 or max_samples < 2:
        raise AnomalyModelError("n_estimators must be >= 1 and max_samples >= 2")
    if not 0.5 <= quantile < 1.0:
        raise AnomalyModelError(f"quantile must be in [0.5, 1), got {quantile}")
    rows = sorted(rows, key=lambda r: r[0])
    if features is None:
        seen: set[str] = set()
        for _, m in rows:
            seen.update(m)
        features = default_features(kind, seen, time_features)
    features = tuple(features)
    if not [f for f in features if f not in TIME_FEATURES]:
        raise AnomalyModelError(f"{sensor_id}: no metric to train on (features {features})")
    x: list[list[float]] = []
    stamps: list[datetime] = []
    for ts, m in rows:
        row = feature_row(ts.timestamp(), m, features)
        if row is not None:
            x.append(row)
            stamps.append(ts)
    if len(x) < MIN_TRAINING_ROWS:
        raise AnomalyModelError(
            f"{sensor_id}: only {len(x)} complete readings with features {list(features)}; "
            f"need at least {MIN_TRAINING_ROWS} (a longer --since, or the right --sensor)"
        )
    model = IsolationForest(n_estimators=n_estimators, max_samples=min(max_samples, len(x)), random_state=seed)
    model.fit(x)
    scores = sorted(-model.score_samples(x))
    threshold = float(scores[min(len(scores) - 1, int(math.ceil(quantile * len(scores))) - 1)])
    bounds = {
        f: [min(r[j] for r in x), max(r[j] for r in x)] for j, f in enumerate(features) if f not in TIME_FEATURES
    }
    meta = ModelMetadata(
        sensor_id=sensor_id,
        bounds=bounds,
        kind=kind,
        features=features,
        threshold=threshold,
        trained_at=trained_at.isoformat(),
        n_samples=len(x),
        sklearn_version=sklearn_version,
        data_from=stamps[0].isoformat(),
        data_to=stamps[-1].isoformat(),
        params={"n_estimators": n_estimators, "max_samples": int(model.max_samples_), "quantile": quantile,
                "seed": seed},
    )
    return AnomalyModel(model, meta)


def save_model(am: AnomalyModel, path: Path) -> Path:
    """Write the model file atomically (temp file + rename)."""
    import joblib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": asdict(am.metadata),
               "model": am.model}
    try:
        joblib.dump(payload, tmp, compress=3)
        os.replace(tmp, path)
    except OSError as e:
        raise AnomalyModelError(f"cannot write anomaly model {path}: {e}") from e
    return path


def _minor(version: str) -> tuple[str, ...]:
    return tuple(version.split(".")[:2])


def load_model(path: Path, *, sensor_id: str | None = None) -> AnomalyModel:
    """Read and check a model file; every failure is an :class:`AnomalyModelError` naming the file."""
    import joblib
    from sklearn import __version__ as sklearn_version

    path = Path(path)
    retrain = f"retrain it: ioc train --from FILE --sensor {sensor_id or 'ID'} --out {path}"
    if not path.is_file():
        raise AnomalyModelError(f"anomaly model {path} not found; {retrain}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # version skew is reported below, from the metadata
            payload = joblib.load(path)
    except Exception as e:
        raise AnomalyModelError(f"{path} is not a readable anomaly model ({type(e).__name__}: {e}); {retrain}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AnomalyModelError(f"{path} is not an IOC anomaly model (format {FORMAT!r} expected); {retrain}")
    if payload.get("format_version") != FORMAT_VERSION:
        raise AnomalyModelError(
            f"{path} is model format v{payload.get('format_version')}, this build reads v{FORMAT_VERSION}; {retrain}"
        )
    try:
        raw = dict(payload["metadata"])
        raw["features"] = tuple(raw["features"])
        meta = ModelMetadata(**raw)
    except (KeyError, TypeError, ValueError) as e:
        raise AnomalyModelError(f"{path} has incomplete metadata ({e}); {retrain}") from e
    if _minor(meta.sklearn_version) != _minor(sklearn_version):
        raise AnomalyModelError(
            f"{path} was trained with scikit-learn {meta.sklearn_version}, this worker has {sklearn_version}; {retrain}"
        )
    model = payload.get("model")
    if type(model).__name__ != "IsolationForest" or not hasattr(model, "estimators_"):
        raise AnomalyModelError(f"{path} does not hold a fitted IsolationForest; {retrain}")
    if getattr(model, "n_features_in_", None) != len(meta.features):
        raise AnomalyModelError(
            f"{path}: the model takes {getattr(model, 'n_features_in_', '?')} features but the metadata lists "
            f"{len(meta.features)} ({list(meta.features)}); {retrain}"
        )
    if not (0.0 < meta.threshold <= 1.0):
        raise AnomalyModelError(f"{path}: threshold {meta.threshold} is not an anomaly score in (0, 1]; {retrain}")
    if sensor_id is not None and meta.sensor_id != sensor_id:
        raise AnomalyModelError(f"{path} was trained for sensor {meta.sensor_id}, not {sensor_id}; {retrain}")
    return AnomalyModel(model, meta)
