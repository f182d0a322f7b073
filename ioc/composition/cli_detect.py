"""``ioc detect-file``: the univariate anomaly score over any exported ``timestamp,value`` CSV.

Input rules (liberal in what is read, strict about what cannot be):

* A header row is required; it must name a ``timestamp`` and a ``value`` column (any case, any
  order, other columns allowed and passed through). A leading UTF-8 BOM is ignored.
* Timestamps: ISO 8601 with or without a zone (``2014-02-19T10:50:00+07:00``, ``...Z``),
  ``YYYY-MM-DD HH:MM[:SS[.ffffff]]`` (``/`` also accepted as the date separator), or epoch seconds
  (integer or decimal; 13-, 16- and 19-digit epochs are read as ms, µs and ns). Naive times are UTC.
* Values: a number. Blank, ``nan``, ``na``, ``null``, ``none`` or an infinity mean *no reading*:
  the row scores 0 and the detector learns nothing from it.
* Rows are scored in file order (the score is causal in that order); timestamps that do not increase
  are counted and reported, not reordered. Empty lines are dropped.

A row whose timestamp or value cannot be read, or that is too short to hold both, is an error:
by default (``--on-error fail``) the command stops, names the file and line, and writes nothing.
With ``--on-error skip`` such rows are kept in the output with ``anomaly_score`` 0, are not learned
from, and are counted in the summary. The output is every input row and column plus
``anomaly_score`` in [0, 1] with 6 decimals (an existing ``anomaly_score`` column is replaced).
"""

from __future__ import annotations

import contextlib
import csv
import functools
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from detectors.univariate import DEFAULT_METHOD, METHODS, UnivariateAnomalyScorer
from ioc.errors import IocError

log = logging.getLogger(__name__)
option = functools.partial(click.option, show_envvar=True)

SCORE_COLUMN = "anomaly_score"
ON_ERROR = ("fail", "skip")
_MISSING = {"", "nan", "na", "n/a", "null", "none", "-nan", "+nan"}


class RowWriter(Protocol):
    def writerow(self, row: Iterable[Any], /) -> Any: ...


class DetectInputError(IocError):
    """The input CSV cannot be scored as given; the message names the file and line."""


@dataclass(frozen=True)
class DetectSummary:
    rows: int  # data rows written
    scored: int  # rows with a value the detector learned from
    missing: int  # blank / NaN / infinite values
    skipped: int  # unreadable rows kept with score 0 (--on-error skip)
    alarms: int
    not_increasing: int  # timestamps <= the previous row's
    seconds: float


def parse_timestamp(text: str) -> float:
    """Epoch seconds (UTC) from ISO 8601, ``YYYY-MM-DD HH:MM:SS`` or an epoch number.

    >>> parse_timestamp("2014-02-19 10:50:00"), parse_timestamp("2014-02-19T17:50:00+07:00")
    (1392807000.0, 1392807000.0)
    >>> parse_timestamp("1392807000"), parse_timestamp("1392807000000"), parse_timestamp("2014/02/19 10:50:00Z")
    (1392807000.0, 1392807000.0, 1392807000.0)
    """
    s = text.strip()
    if not s:
        raise ValueError("empty timestamp")
    try:
        x = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(x):
            raise ValueError(f"timestamp {text!r} is not a time")
        for scale in (1.0, 1e3, 1e6, 1e9):  # s, ms, µs, ns by magnitude
            if abs(x) < 1e11 * scale:
                return x / scale
        raise ValueError(f"epoch timestamp {text!r} is out of range")
    iso_text = s.replace("/", "-")
    if iso_text.endswith(("Z", "z")):
        iso_text = iso_text[:-1] + "+00:00"
    try:
        ts = datetime.fromisoformat(iso_text)
    except ValueError as e:
        raise ValueError(f"cannot read timestamp {text!r}: use ISO 8601, 'YYYY-MM-DD HH:MM:SS' or epoch seconds") from e
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def parse_value(text: str) -> float | None:
    """The value, or None for no reading (blank, NaN, infinite).

    >>> parse_value(" 3.5 "), parse_value(""), parse_value("NaN"), parse_value("-inf"), parse_value("1e3")
    (3.5, None, None, None, 1000.0)
    """
    s = text.strip()
    if s.lower() in _MISSING:
        return None
    try:
        x = float(s)
    except ValueError as e:
        raise ValueError(f"cannot read value {text!r} as a number") from e
    return x if math.isfinite(x) else None


def _find_columns(header: list[str], where: str) -> tuple[int, int]:
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("timestamp", "value") if c not in names]
    if missing:
        raise DetectInputError(
            f"{where}:1: the header must name the columns 'timestamp' and 'value' "
            f"(missing {', '.join(missing)}); found {header!r}"
        )
    return names.index("timestamp"), names.index("value")


def score_rows(
    rows: Iterable[list[str]],
    writer: RowWriter,
    *,
    method: str = DEFAULT_METHOD,
    on_error: str = "fail",
    where: str = "<input>",
    line_num: Callable[[], int] | None = None,
) -> DetectSummary:
    """Score CSV rows (header first) and write each with its ``anomaly_score``; see the module doc.

    ``line_num`` gives the physical line the last row ended on, for error messages.

    >>> out = []
    >>> class W:
    ...     def writerow(self, row): out.append(row)
    >>> rows = [["timestamp", "value"]] + [[f"2025-01-01 00:{i:02d}:00", "1"] for i in range(3)]
    >>> score_rows(rows, W()).rows, out[0], out[1]
    (3, ['timestamp', 'value', 'anomaly_score'], ['2025-01-01 00:00:00', '1', '0.000000'])
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    started = time.perf_counter()
    rows = iter(rows)
    header = next(rows, None)
    if header is None:
        raise DetectInputError(f"{where}: the file is empty; it needs a 'timestamp,value' header")
    header = [h.lstrip("\ufeff") for h in header]
    t_col, v_col = _find_columns(header, where)
    names = [h.strip().lower() for h in header]
    s_col = names.index(SCORE_COLUMN) if SCORE_COLUMN in names else None
    writer.writerow(header if s_col is not None else [*header, SCORE_COLUMN])
    scorer = UnivariateAnomalyScorer(method)
    n = scored = missing = skipped = alarms = not_increasing = 0
    prev_ts: float | None = None
    for row in rows:
        line = line_num() if line_num is not None else n + 2
        if not row or all(not f.strip() for f in row):
            continue  # an empty line is not a row
        n += 1
        try:
            if len(row) <= max(t_col, v_col):
                raise ValueError(f"expected at least {max(t_col, v_col) + 1} fields, got {len(row)}")
            ts = parse_timestamp(row[t_col])
            value = parse_value(row[v_col])
        except ValueError as e:
            if on_error == "fail":
                raise DetectInputError(f"{where}:{line}: {e}; fix the row or pass --on-error skip") from e
            skipped += 1
            if skipped <= 5:
                log.warning("%s:%s: skipped (%s)", where, line, e)
            score = 0.0
        else:
            if prev_ts is not None and ts <= prev_ts:
                not_increasing += 1
            prev_ts = ts
            if value is None:
                missing += 1
            else:
                scored += 1
            score = scorer.score(ts, value)
            alarms += scorer.alarm
        text = f"{score:.6f}"
        if s_col is not None:
            out = list(row) + [""] * (s_col + 1 - len(row))
            out[s_col] = text
        else:
            out = [*row, text]
        writer.writerow(out)
    return DetectSummary(n, scored, missing, skipped, alarms, not_increasing, time.perf_counter() - started)


def _counted_lines(f: IO[str], progress: Progress | None, task: Any) -> Iterator[str]:
    for line in f:
        if progress is not None:
            progress.advance(task, len(line))
        yield line


def detect_file(src: Path, dst: Path | str, *, method: str = DEFAULT_METHOD, on_error: str = "fail",
                show_progress: bool = False) -> DetectSummary:
    """Score ``src`` into ``dst`` (``"-"`` for stdout). A file output appears only when complete."""
    if method not in METHODS:
        raise DetectInputError(f"unknown detector {method!r}; choose one of {', '.join(METHODS)}")
    where = str(src)
    try:
        size = os.path.getsize(src)
        f_in = open(src, newline="", encoding="utf-8-sig")  # closed by the with below
    except OSError as e:
        raise DetectInputError(f"cannot read {src}: {e.strerror or e}") from e
    progress = (Progress(TextColumn("scoring"), BarColumn(), TimeRemainingColumn(),
                         console=Console(stderr=True), transient=True) if show_progress else None)
    with f_in, (progress if progress is not None else contextlib.nullcontext()):
        task = progress.add_task("score", total=size) if progress is not None else None
        reader = csv.reader(_counted_lines(f_in, progress, task))

        def run(writer: RowWriter) -> DetectSummary:
            try:
                return score_rows(reader, writer, method=method, on_error=on_error, where=where,
                                  line_num=lambda: reader.line_num)
            except (csv.Error, UnicodeDecodeError) as e:
                raise DetectInputError(f"{where}:{reader.line_num}: not a readable CSV ({e})") from e

        if str(dst) == "-":
            return run(csv.writer(sys.stdout, lineterminator="\n"))
        dst = Path(dst)
        fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
        try:
            with open(fd, "w", newline="", encoding="utf-8") as f_out:
                summary = run(csv.writer(f_out, lineterminator="\n"))
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return summary


def _detector_help() -> str:
    return "Scoring method: " + "; ".join(f"{name} = {desc}" for name, (desc, _) in METHODS.items()) + "."


@click.command("detect-file")
@click.argument("input_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@option("--out", "out", required=True, type=click.Path(dir_okay=False, allow_dash=True),
        help="Output CSV: every input row plus anomaly_score in [0, 1]; '-' writes to stdout.")
@option("--detector", type=click.Choice(list(METHODS)), default=DEFAULT_METHOD, show_default=True,
        help=_detector_help())
@option("--on-error", type=click.Choice(list(ON_ERROR)), default="fail", show_default=True,
        help="An unreadable row: 'fail' stops and names its line; 'skip' keeps it with score 0 and goes on.")
def detect_file_cmd(input_csv: Path, out: str, detector: str, on_error: str) -> None:
    """Score a CSV with columns timestamp,value (header required) for anomalies, causally: each
    row's anomaly_score uses only the rows up to it. Scores are log-scaled tail probabilities:
    0.3 is a 1-in-1000 event, 0.6 one in a million; an alarm scores >= 0.25 and one incident gives
    one alarm. Blank or NaN values score 0."""
    summary = detect_file(input_csv, out, method=detector, on_error=on_error,
                          show_progress=sys.stderr.isatty() and out != "-")
    rate = summary.rows / summary.seconds if summary.seconds > 0 else float("inf")
    click.echo(f"{summary.rows} rows ({summary.scored} scored, {summary.missing} without a value, "
               f"{summary.skipped} skipped) with {detector} in {summary.seconds:.1f} s ({rate:,.0f} rows/s): "
               f"{summary.alarms} alarms"
               + (f"; {summary.not_increasing} timestamps not increasing" if summary.not_increasing else "")
               + ("" if out == "-" else f" -> {out}"), err=True)
