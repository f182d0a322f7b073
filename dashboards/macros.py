"""Expand Grafana's template variables and PostgreSQL macros the way Grafana does, to check panel SQL.

Grafana expands a SQL panel query in two steps, and so does :func:`expand`:

1. The front end interpolates variables: ``$name``, ``${name}``, ``${name:format}``, ``[[name]]``
   and the built-ins ``$__interval``, ``$__interval_ms``, ``$__range_s``, ``$__from``, ``$__to``.
   For SQL data sources a multi-value or include-All variable becomes a list of quoted literals
   (``'a','b'``, quotes doubled inside), a single-value variable its value with quotes doubled.
   "All" is every option of the variable (the caller resolves it, see :class:`Variable`).
2. The back end (``pkg/tsdb/grafana-postgresql-datasource/macros.go``) expands ``$__macro(args)``:
   ``$__time``, ``$__timeEpoch``, ``$__timeFilter``, ``$__timeFrom``, ``$__timeTo``,
   ``$__timeGroup``, ``$__timeGroupAlias``, ``$__unixEpochFilter``, ``$__unixEpochFrom``,
   ``$__unixEpochTo``, ``$__unixEpochGroup``, ``$__unixEpochGroupAlias``. With the data source's
   TimescaleDB option on, ``$__timeGroup`` becomes ``time_bucket()``, which needs TimescaleDB.

An unknown variable or macro is an error here (Grafana would send it to PostgreSQL verbatim).

>>> from datetime import UTC, datetime, timedelta
>>> ctx = MacroContext(datetime(2025, 12, 4, tzinfo=UTC), datetime(2025, 12, 4, 6, tzinfo=UTC),
...                    timedelta(minutes=1), {"kind": Variable(("rain", "tide"))})
>>> expand("SELECT $__timeGroupAlias(ts, $__interval) WHERE kind IN ($kind) AND $__timeFilter(ts)", ctx)
'SELECT floor(extract(epoch from ts)/60)*60 AS "time" WHERE kind IN (\\'rain\\',\\'tide\\') AND ts BETWEEN \\'2025-12-04T00:00:00Z\\' AND \\'2025-12-04T06:00:00Z\\''
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["MacroContext", "MacroError", "Variable", "auto_interval", "expand", "format_interval", "parse_interval"]


class MacroError(ValueError):
    """A query uses a variable or macro that cannot be expanded; the message names it."""


@dataclass(frozen=True)
class Variable:
    """The values a template variable stands for (for "All": every option of the variable)."""

    values: tuple[str, ...]
    multi_or_all: bool = True  # Grafana quotes values of multi-value / include-All variables

    def __post_init__(self) -> None:
        if not self.values:
            raise MacroError("a variable needs at least one value (Grafana would send an empty IN ())")


@dataclass(frozen=True)
class MacroContext:
    """What Grafana knows when it runs a panel: the range, the interval, the variables."""

    start: datetime
    end: datetime
    interval: timedelta
    variables: Mapping[str, Variable] = field(default_factory=dict)
    timescaledb: bool = False

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise MacroError("the time range must be timezone-aware (UTC)")
        if self.end <= self.start:
            raise MacroError(f"empty time range: {self.start.isoformat()} .. {self.end.isoformat()}")
        if self.interval <= timedelta(0):
            raise MacroError("the interval must be positive")


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_interval(text: str) -> timedelta:
    """Grafana interval text (``'5m'``, ``1h``, ``300ms``) to a timedelta.

    >>> parse_interval("'5m'"), parse_interval("1h"), parse_interval("250ms")
    (datetime.timedelta(seconds=300), datetime.timedelta(seconds=3600), datetime.timedelta(microseconds=250000))
    """
    m = re.fullmatch(r"\s*'?\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w|y)\s*'?\s*", text)
    if not m:
        raise MacroError(f"not a Grafana interval: {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def format_interval(td: timedelta) -> str:
    """The largest whole unit, as Grafana prints ``$__interval``.

    >>> format_interval(timedelta(seconds=60)), format_interval(timedelta(seconds=90)), format_interval(timedelta(days=1))
    ('1m', '90s', '1d')
    """
    ms = round(td.total_seconds() * 1000)
    for unit, secs in (("y", _UNITS["y"]), ("w", _UNITS["w"]), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if ms % (secs * 1000) == 0 and ms >= secs * 1000:
            return f"{ms // (secs * 1000)}{unit}"
    return f"{ms}ms"


#: Grafana's ``roundInterval`` (public/app/core/utils/kbn / @grafana/data rangeutil): upper bound (ms) -> step.
_ROUND_STEPS: tuple[tuple[float, int], ...] = (
    (15, 10), (35, 20), (75, 50), (150, 100), (350, 200), (750, 500), (1500, 1000), (3500, 2000),
    (7500, 5000), (12500, 10000), (17500, 15000), (25000, 20000), (45000, 30000), (90000, 60000),
    (210000, 120000), (450000, 300000), (750000, 600000), (1050000, 900000), (1500000, 1200000),
    (2700000, 1800000), (5400000, 3600000), (9000000, 7200000), (16200000, 10800000), (32400000, 21600000),
    (86400000, 43200000), (604800000, 86400000), (1814400000, 604800000), (3628800000, 2592000000),
)


def auto_interval(start: datetime, end: datetime, max_data_points: int = 1000,
                  min_interval: timedelta = timedelta(seconds=1)) -> timedelta:
    """``$__interval`` for a panel ``max_data_points`` wide: range / points, rounded to a nice step.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2025, 1, 1, tzinfo=UTC)
    >>> format_interval(auto_interval(t, t + timedelta(hours=6))), format_interval(auto_interval(t, t + timedelta(days=30)))
    ('20s', '30m')
    """
    raw_ms = (end - start).total_seconds() * 1000 / max(1, max_data_points)
    step = 31536000000
    for bound, value in _ROUND_STEPS:
        if raw_ms < bound:
            step = value
            break
    return max(timedelta(milliseconds=step), min_interval)


def _ts(t: datetime) -> str:
    """RFC 3339 in UTC, as Grafana formats the range (fractional seconds only when present)."""
    if t.utcoffset() != timedelta(0):
        raise MacroError("time range must be in UTC")
    frac = f".{t.microsecond:06d}".rstrip("0") if t.microsecond else ""
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _quote(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _format_values(name: str, var: Variable, fmt: str | None) -> str:
    vals = var.values
    if fmt is None:
        if var.multi_or_all:
            return ",".join(_quote(v) for v in vals)
        return vals[0].replace("'", "''")
    if fmt in ("singlequote", "sqlstring"):
        return ",".join(_quote(v) for v in vals)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in vals)
    if fmt in ("csv", "raw"):
        return ",".join(vals)
    raise MacroError(f"unsupported format {fmt!r} for variable ${name}")


_VAR_RE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?::([^}]+))?\}")
_MACRO_RE = re.compile(r"\$(__\w+)\(([^()]*)\)")


def _builtins(ctx: MacroContext) -> dict[str, str]:
    span_ms = int((ctx.end - ctx.start).total_seconds() * 1000)
    return {
        "__interval": format_interval(ctx.interval),
        "__interval_ms": str(int(ctx.interval.total_seconds() * 1000)),
        "__range_s": str(span_ms // 1000),
        "__range_ms": str(span_ms),
        "__range": format_interval(timedelta(milliseconds=span_ms)),
        "__from": str(int(ctx.start.timestamp() * 1000)),
        "__to": str(int(ctx.end.timestamp() * 1000)),
    }


def interpolate_variables(sql: str, ctx: MacroContext) -> str:
    """Step 1: template variables and interval/range built-ins; ``$__macro(`` calls are left alone."""
    builtins = _builtins(ctx)

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(5)
        if name in builtins:
            return builtins[name]
        if name.startswith("__"):
            if m.group(1) and sql[m.end():m.end() + 1] == "(":
                return m.group(0)  # a back-end macro, step 2
            raise MacroError(f"unknown built-in variable ${name}")
        if name not in ctx.variables:
            raise MacroError(f"unknown template variable ${name}")
        return _format_values(name, ctx.variables[name], fmt)

    return _VAR_RE.sub(repl, sql)


def _args(raw: str) -> list[str]:
    return [a.strip() for a in raw.split(",")] if raw.strip() else []


def _need(name: str, args: Sequence[str], n: int) -> None:
    if len(args) < n:
        raise MacroError(f"macro ${name} needs {n} argument(s), got {len(args)}")


def expand_macros(sql: str, ctx: MacroContext) -> str:
    """Step 2: the PostgreSQL data source's ``$__macro(args)`` expansion."""
    frm, to = _ts(ctx.start), _ts(ctx.end)
    from_s, to_s = int(ctx.start.timestamp()), int(ctx.end.timestamp())

    def group(col: str, interval_arg: str) -> str:
        secs = parse_interval(interval_arg).total_seconds()
        secs_txt = f"{secs:g}"
        if ctx.timescaledb:
            return f"time_bucket('{secs:.0f}s',{col})"
        return f"floor(extract(epoch from {col})/{secs_txt})*{secs_txt}"

    def repl(m: re.Match[str]) -> str:
        name, args = m.group(1), _args(m.group(2))
        if name == "__time":
            _need(name, args, 1)
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            _need(name, args, 1)
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            _need(name, args, 1)
            return f"{args[0]} BETWEEN '{frm}' AND '{to}'"
        if name == "__timeFrom":
            return f"'{frm}'"
        if name == "__timeTo":
            return f"'{to}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            _need(name, args, 2)  # a third (fill) argument only shapes the result frame
            out = group(args[0], args[1])
            return out + ' AS "time"' if name.endswith("Alias") else out
        if name == "__unixEpochFilter":
            _need(name, args, 1)
            return f"{args[0]} >= {from_s} AND {args[0]} <= {to_s}"
        if name == "__unixEpochFrom":
            return str(from_s)
        if name == "__unixEpochTo":
            return str(to_s)
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            _need(name, args, 2)
            secs = parse_interval(args[1]).total_seconds()
            out = f"floor(({args[0]})/{secs:g})*{secs:g}"
            return out + ' AS "time"' if name.endswith("Alias") else out
        raise MacroError(f"unknown macro ${name}()")

    out = _MACRO_RE.sub(repl, sql)
    if (left := re.search(r"\$__\w+", out)) is not None:
        raise MacroError(f"macro left unexpanded (nested parentheses?): {left.group(0)}")
    return out


def expand(sql: str, ctx: MacroContext) -> str:
    """Both steps, in Grafana's order."""
    return expand_macros(interpolate_variables(sql, ctx), ctx)


def variable_names(sql: str) -> set[str]:
    """Template variables a query refers to (built-ins and macros excluded).

    >>> sorted(variable_names("WHERE a IN ($district) AND b = ${kind:csv} AND $__timeFilter(ts)"))
    ['district', 'kind']
    """
    names = set()
    for m in _VAR_RE.finditer(sql):
        name = m.group(1) or m.group(2) or m.group(4)
        if not name.startswith("__"):
            names.add(name)
    return names
