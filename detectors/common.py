"""Small pure helpers shared by the health and anomaly detectors: time, scores, finding builders.

Nothing here reads a clock or does I/O. Local time is Asia/Ho_Chi_Minh, a fixed UTC+7 with no
daylight saving, so it is computed from the epoch without a time-zone database.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Protocol

from ioc.models import Finding

#: Asia/Ho_Chi_Minh is UTC+7 all year (no DST since 1975).
LOCAL_UTC_OFFSET_S = 7 * 3600
#: 1970-01-01 was a Thursday; adding 3 makes Monday day 0 of the week.
_EPOCH_WEEKDAY_SHIFT = 3


def hour_of_week(epoch_s: float, utc_offset_s: int = LOCAL_UTC_OFFSET_S) -> int:
    """Local hour of the week, Monday 00:00-00:59 = 0 … Sunday 23:00-23:59 = 167.

    >>> hour_of_week(datetime(2025, 10, 9, 0, 30, tzinfo=UTC).timestamp())  # Thu 07:30 in Nha Trang
    79
    """
    local = int(epoch_s // 1) + utc_offset_s
    day = local // 86400
    return ((day + _EPOCH_WEEKDAY_SHIFT) % 7) * 24 + (local // 3600) % 24


def finite(v: object) -> float | None:
    """The value as a float if it is a finite real number, else None (bad input is skipped).

    >>> finite(1), finite(float("nan")), finite("x"), finite(True)
    (1.0, None, None, None)
    """
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


#: Learned statistics clamp inputs here so a garbage 1e308 cannot overflow a mean to inf/NaN.
BIG = 1e12


class Clearable(Protocol):
    active: bool
    ok_run: int
    clear_after: int


def calm_long_enough(det: Clearable, calm: bool = True) -> bool:
    """Count one reading of an active fault; True (and the fault cleared) after ``clear_after``
    calm readings in a row, a reading that is not ``calm`` starting the count again.
    Hysteresis: one good value does not end a fault.

    >>> from types import SimpleNamespace
    >>> d = SimpleNamespace(active=True, ok_run=0, clear_after=2)
    >>> calm_long_enough(d), calm_long_enough(d), d.active
    (False, True, False)
    """
    if not det.active:
        return False
    det.ok_run = det.ok_run + 1 if calm else 0
    if det.ok_run < det.clear_after:
        return False
    det.active = False
    det.ok_run = 0
    return True


def clamp(f: float) -> float:
    """``f`` limited to ±``BIG``.

    >>> clamp(1e300), clamp(-2.0)
    (1000000000000.0, -2.0)
    """
    return BIG if f > BIG else (-BIG if f < -BIG else f)


def bounded(v: object) -> float | None:
    """Like :func:`finite`, clamped to ±``BIG`` for learning.

    >>> bounded(1e300), bounded(-3.5), bounded(float("inf"))
    (1000000000000.0, -3.5, None)
    """
    f = finite(v)
    return None if f is None else clamp(f)


def excess_score(observed: float, allowed: float) -> float:
    """How far past a limit, in [0, 1): 0 at the limit, towards 1 far beyond it.

    >>> excess_score(2.0, 1.0), excess_score(1.0, 1.0), excess_score(1e300, 1.0)
    (0.5, 0.0, 1.0)
    """
    observed, allowed = abs(observed), abs(allowed)
    if observed <= allowed or observed == 0.0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - allowed / observed))


def z_score01(z: float, z_on: float) -> float:
    """Map |z| to [0, 1): 0.5 at the alarm threshold ``z_on``.

    >>> z_score01(6.0, 6.0), z_score01(0.0, 6.0)
    (0.5, 0.0)
    """
    a = abs(z)
    if not math.isfinite(a):
        return 1.0
    return a / (a + z_on)


def clamp_finite(v: float, bound: float = 1e300) -> float:
    """Keep a value reported in a finding finite (huge inputs stay huge, never inf/NaN)."""
    if math.isnan(v):
        return 0.0
    return max(-bound, min(bound, v))


def iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def from_iso(s: Any) -> datetime | None:
    if not s:
        return None
    ts = datetime.fromisoformat(str(s))
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def check_version(state: dict[str, Any], version: int, name: str) -> None:
    if state.get("state_version") != version:
        raise ValueError(
            f"unsupported {name} state_version {state.get('state_version')!r} (this build reads {version}); "
            "drop the stored state to start the detector cold"
        )


def make_finding(
    *,
    sensor_id: str,
    rule: str,
    kind: str,
    family: str,
    metric: str,
    ts: datetime,
    severity: str | None,
    value: float,
    threshold: float | None,
    score: float,
    message: str,
    message_en: str,
    detail: dict[str, object] | None = None,
) -> Finding:
    """One finding with every number finite and the score clipped to [0, 1]."""
    s = 0.0 if not math.isfinite(score) else min(1.0, max(0.0, score))
    return Finding(
        sensor_id=sensor_id,
        rule=rule,
        kind=kind,
        metric=metric,
        ts=ts,
        severity=severity,
        value=clamp_finite(value),
        threshold=None if threshold is None else clamp_finite(threshold),
        message=message,
        detail=detail or {},
        family=family,
        score=s,
        message_en=message_en,
    )


def label_of(sensor_id: str, name: str | None) -> str:
    """How a warning names its sensor to people: the registry's name, else the id.

    >>> label_of("HYD_DONG_TRANG", "Đồng Trăng"), label_of("HYD_DONG_TRANG", None)
    ('Đồng Trăng', 'HYD_DONG_TRANG')
    """
    return name or sensor_id


def require(cond: bool, msg: str) -> None:
    """Constructor validation: raise ValueError with a message that says what to do."""
    if not cond:
        raise ValueError(msg)
