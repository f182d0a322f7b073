"""Anomaly: an IsolationForest over one sensor's multivariate readings, trained offline.

The detector takes an already-fitted ``sklearn.ensemble.IsolationForest`` (from
:func:`ioc.anomaly_model.load_model`, which the worker calls at start-up) and compiles its trees
once into a Python function (:func:`compile_forest`): sklearn's ``score_samples`` costs
milliseconds per call for a single row, the compiled forest a few microseconds. The score is the
forest's own anomaly score ``2^(−E[h(x)]/c(ψ))`` in (0, 1] (about 0.5 for ordinary points),
identical to ``-model.score_samples``. A finding needs ``persist`` readings above the model's
threshold (the training-score quantile stored with the model).

An isolation forest saturates outside its training data: every split threshold lies inside the
training range, so a point far beyond it is isolated no faster than the most extreme training
point, and a jam at 3 km/h scores like an ordinary rush-hour peak. The detector therefore also
counts a metric beyond the training envelope (``bounds`` in the model metadata) by more than
``envelope_margin`` × its training span as anomalous."""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from detectors.common import LOCAL_UTC_OFFSET_S, calm_long_enough, check_version, make_finding, require
from ioc.anomaly_model import TIME_FEATURES, AnomalyModel, feature_row
from ioc.models import Finding, Reading

STATE_VERSION = 1
_EULER_GAMMA = 0.5772156649015329


def average_path_length(n: float) -> float:
    """c(n): the mean depth of an unsuccessful search in a binary search tree of n points.

    >>> average_path_length(1), average_path_length(2), round(average_path_length(256), 4)
    (0.0, 1.0, 10.2448)
    """
    if n <= 1:
        return 0.0
    if n <= 2:
        return 1.0
    return 2.0 * (math.log(n - 1.0) + _EULER_GAMMA) - 2.0 * (n - 1.0) / n


def _tree_arrays(model: Any) -> list[tuple[list[int], list[float], list[int], list[int], list[float]]]:
    """Each tree as (feature, threshold, left, right, leaf path length) lists; feature -1 at leaves."""
    n_features = int(model.n_features_in_)
    trees = []
    for est, cols in zip(model.estimators_, model.estimators_features_, strict=True):
        t = est.tree_
        cols = [int(c) for c in cols]
        subset = len(cols) != n_features
        feature = [(cols[f] if subset else int(f)) if f >= 0 else -1 for f in t.feature.tolist()]
        left, right = t.children_left.tolist(), t.children_right.tolist()
        samples = t.n_node_samples.tolist()
        depth = [0] * len(feature)
        for node in range(len(feature)):  # children always follow their parent in sklearn's arrays
            if feature[node] >= 0:
                depth[left[node]] = depth[right[node]] = depth[node] + 1
        leaf = [depth[i] + average_path_length(samples[i]) if feature[i] < 0 else 0.0 for i in range(len(feature))]
        trees.append((feature, t.threshold.tolist(), left, right, leaf))
    return trees


def compile_forest(model: Any) -> tuple[Callable[..., float], float]:
    """The forest as one Python function of the features returning the summed path length, and c(ψ).

    Each tree becomes a nested conditional expression, so scoring costs one comparison per level
    in bytecode (about 5 µs for 50 trees of 128 samples, against ~27 µs for a list-walking loop and
    milliseconds for ``score_samples`` on one row). The source is generated here from the model's
    integers and floats only (``repr`` round-trips floats exactly); nothing external is evaluated.
    """
    n = int(model.n_features_in_)
    terms = []
    for feature, thr, left, right, leaf in _tree_arrays(model):
        if not all(math.isfinite(v) for v in thr) or not all(math.isfinite(v) for v in leaf):
            raise ValueError("the IsolationForest has non-finite thresholds; retrain it")

        def expr(i: int, feature: list[int] = feature, thr: list[float] = thr, left: list[int] = left,
                 right: list[int] = right, leaf: list[float] = leaf) -> str:
            if feature[i] < 0:
                return repr(float(leaf[i]))
            return f"({expr(left[i])} if x{feature[i]} <= {float(thr[i])!r} else {expr(right[i])})"

        terms.append(expr(0))
    args = ", ".join(f"x{j}" for j in range(n))
    src = f"def path_length_sum({args}):\n    return 0.0 + " + " + ".join(terms or ["0.0"]) + "\n"
    namespace: dict[str, Any] = {}
    exec(compile(src, "<isolation-forest>", "exec"), namespace)  # source built above from numbers only
    return namespace["path_length_sum"], len(terms) * average_path_length(float(model.max_samples_))


class IsolationForestDetector:
    """Raises ``anomaly_iforest`` when a sensor's joint readings are ones the forest isolates quickly."""

    rule = "anomaly_iforest"

    def __init__(
        self,
        sensor_id: str,
        model: Any,
        *,
        features: Sequence[str],
        threshold: float,
        model_id: str = "",
        persist: int = 3,  # readings above the threshold in a row before raising
        clear_after: int = 3,
        bounds: Mapping[str, Sequence[float]] | None = None,  # metric -> (min, max) seen in training
        envelope_margin: float = 0.5,  # beyond the training span by this fraction of it = anomalous
        utc_offset_s: int = LOCAL_UTC_OFFSET_S,
        severity: str = "info",
    ) -> None:
        require(hasattr(model, "estimators_") and hasattr(model, "estimators_features_"),
                f"{sensor_id}: model must be a fitted sklearn IsolationForest (see ioc.anomaly_model.load_model)")
        require(len(features) == int(model.n_features_in_),
                f"{sensor_id}: {len(features)} feature names for a model of {model.n_features_in_} features")
        require(any(f not in TIME_FEATURES for f in features), f"{sensor_id}: features need at least one metric")
        require(0.0 < threshold <= 1.0, f"threshold must be an anomaly score in (0, 1], got {threshold}")
        require(persist >= 1 and clear_after >= 1, "persist and clear_after must be >= 1")
        require(envelope_margin >= 0, "envelope_margin must be >= 0")
        self.sensor_id = sensor_id
        self.features = tuple(features)
        self.metric_names = [f for f in self.features if f not in TIME_FEATURES]
        self.threshold = float(threshold)
        self.model_id = model_id
        self.persist = persist
        self.clear_after = clear_after
        self.utc_offset_s = utc_offset_s
        self.severity = severity
        # (feature index, low, high, span) of each metric with a training envelope
        self.envelope: list[tuple[int, float, float, float]] = []
        for f, b in (bounds or {}).items():
            if f in self.features and len(b) == 2 and all(math.isfinite(x) for x in b) and b[1] >= b[0]:
                span = max(b[1] - b[0], 1e-9)
                pad = envelope_margin * span
                self.envelope.append((self.features.index(f), b[0] - pad, b[1] + pad, span))
        self._path_length_sum, self._denominator = compile_forest(model)
        self.reset()

    @classmethod
    def from_model(cls, am: AnomalyModel, **kwargs: Any) -> IsolationForestDetector:
        """Build from a loaded model file (metadata gives sensor, features, threshold and id)."""
        m = am.metadata
        return cls(m.sensor_id, am.model, features=m.features, threshold=m.threshold, model_id=m.model_id,
                   bounds=m.bounds, **kwargs)

    def reset(self) -> None:
        self.run = 0
        self.ok_run = 0
        self.active = False
        self.last_t: float | None = None

    @property
    def ready(self) -> bool:
        return True  # trained offline

    def score(self, row: Sequence[float]) -> float:
        """The forest's anomaly score for one feature row (same as ``-model.score_samples``)."""
        x = array("f", row).tolist()  # sklearn compares in float32
        total = self._path_length_sum(*x)
        return 2.0 ** (-total / self._denominator) if self._denominator > 0 else 1.0

    def update(self, reading: Reading) -> list[Finding]:
        t = reading.ts.timestamp()
        if self.last_t is not None and t <= self.last_t:
            return []
        row = feature_row(t, reading.metrics, self.features, self.utc_offset_s)
        if row is None:
            return []  # a metric is missing or not finite: nothing to score
        if any(abs(v) > 1e30 for v in row):
            row = [max(-1e30, min(1e30, v)) for v in row]  # float32 would make these inf
        self.last_t = t
        s = self.score(row)
        for j, lo, hi, span in self.envelope:
            v = row[j]
            if v < lo or v > hi:  # outside the training envelope: the forest saturates here
                e = (lo - v) if v < lo else (v - hi)
                s = max(s, self.threshold + (1.0 - self.threshold) * e / (e + span))
        if s > self.threshold:
            self.ok_run = 0
            self.run += 1
            if self.active or self.run < self.persist:
                return []
            self.active = True
            top = self.metric_names[0]
            return [make_finding(
                sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=top,
                ts=reading.ts, severity=self.severity, value=float(reading.metrics[top]), threshold=self.threshold,
                score=s,
                message=f"{self.sensor_id}: tổ hợp giá trị đo bất thường (điểm {s:.2f} > {self.threshold:.2f})",
                message_en=f"{self.sensor_id}: unusual combination of readings (score {s:.2f} > {self.threshold:.2f})",
                detail={"model_id": self.model_id,
                        "features": {f: round(v, 6) for f, v in zip(self.features, row, strict=True)}},
            )]
        self.run = 0
        if not calm_long_enough(self):
            return []
        top = self.metric_names[0]
        return [make_finding(
            sensor_id=self.sensor_id, rule=self.rule, kind="anomaly", family="anomaly", metric=top,
            ts=reading.ts, severity=None, value=float(reading.metrics[top]), threshold=None, score=0.0,
            message=f"{self.sensor_id}: tổ hợp giá trị đo đã bình thường",
            message_en=f"{self.sensor_id}: readings look ordinary again",
        )]

    def to_state(self) -> dict[str, Any]:
        return {"state_version": STATE_VERSION, "model_id": self.model_id, "run": self.run, "ok_run": self.ok_run,
                "active": self.active, "last_t": self.last_t}

    def from_state(self, state: dict[str, Any]) -> None:
        check_version(state, STATE_VERSION, "IsolationForestDetector")
        self.run = int(state["run"])
        self.ok_run = int(state["ok_run"])
        self.active = bool(state["active"])
        self.last_t = None if state.get("last_t") is None else float(state["last_t"])
