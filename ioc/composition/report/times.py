"""Report windows: parsing operator-typed times and shown in Vietnam time (UTC+7, no DST).

A time without an offset is read as Vietnam time, because that is what IOC staff type; the
window is half-open, [from, to).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from ioc.errors import IocError

#: Indochina Time. Vietnam has no daylight saving time, so a fixed offset is exact (and needs no tzdata).
ICT: Final = timezone(timedelta(hours=7), "ICT")
#: Longest window a report accepts; beyond it charts turn into smears and queries take minutes.
MAX_WINDOW: Final = timedelta(days=366)


class ReportTimeError(IocError):
    """A --from/--to value is unparseable or the window is empty or reversed."""


def parse_time(text: str, *, option: str = "time") -> datetime:
    """ISO 8601 date or date-time; no offset means Vietnam time. Returns aware UTC.

    >>> parse_time("2025-12-04T07:00:00+07:00").isoformat()
    '2025-12-04T00:00:00+00:00'
    >>> parse_time("2025-12-04 07:00").isoformat(), parse_time("2025-12-04").isoformat()
    ('2025-12-04T00:00:00+00:00', '2025-12-03T17:00:00+00:00')
    >>> parse_time("2025-12-04T00:00:00Z").isoformat()
    '2025-12-04T00:00:00+00:00'
    >>> parse_time("yesterday", option="--from")
    Traceback (most recent call last):
    ...
    ioc.composition.report.times.ReportTimeError: --from: cannot read 'yesterday' as a time; use ISO 8601 such as 2025-12-04T07:00+07:00 (no offset means Vietnam time, UTC+7)
    """
    raw = text.strip()
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError as e:
        raise ReportTimeError(
            f"{option}: cannot read {text!r} as a time; use ISO 8601 such as 2025-12-04T07:00+07:00 "
            "(no offset means Vietnam time, UTC+7)"
        ) from e
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=ICT)
    return ts.astimezone(UTC)


def resolve_window(
    start: datetime | None,
    end: datetime | None,
    *,
    default_start: datetime | None = None,
    default_end: datetime | None = None,
    default_span: timedelta | None = None,
) -> tuple[datetime, datetime]:
    """The window from explicit bounds, else a default range (a scenario's), else one bound plus a span.

    >>> t = datetime(2025, 12, 4, tzinfo=UTC)
    >>> [x.hour for x in resolve_window(None, t, default_span=timedelta(hours=16))]
    [8, 0]
    >>> resolve_window(t, t)
    Traceback (most recent call last):
    ...
    ioc.composition.report.times.ReportTimeError: --from (2025-12-04 07:00 ICT) must be before --to (2025-12-04 07:00 ICT)
    """
    if start is None and end is not None and default_span is not None:
        start = end - default_span
    if end is None and start is not None and default_span is not None:
        end = start + default_span
    start = start if start is not None else default_start
    end = end if end is not None else default_end
    if start is None or end is None:
        raise ReportTimeError("give --from and --to (or --scenario NAME, whose time range is the default)")
    if start >= end:
        raise ReportTimeError(f"--from ({show(start)}) must be before --to ({show(end)})")
    if end - start > MAX_WINDOW:
        raise ReportTimeError(f"the window {show(start)} – {show(end)} is longer than {MAX_WINDOW.days} days")
    return start.astimezone(UTC), end.astimezone(UTC)


def show(ts: datetime) -> str:
    """Vietnam time for people: '2025-12-04 07:00 ICT'.

    >>> show(datetime(2025, 12, 4, tzinfo=UTC))
    '2025-12-04 07:00 ICT'
    """
    return ts.astimezone(ICT).strftime("%Y-%m-%d %H:%M ICT")
