"""Idempotent, late-data-correct writes of readings and their 1-minute roll-ups.

Binary COPY into a session temp table, then one statement: ``INSERT ... ON CONFLICT DO NOTHING``
and the rows it really inserted folded into their 1-minute buckets. A redelivered batch
therefore changes nothing, and a late reading corrects its bucket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from ioc.storage.offset_ledger import Claim, ClaimResult, Position, claim_offset
from ioc.wire import Reading

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS readings_stage (
    ts timestamptz NOT NULL, sensor_id text NOT NULL, metric text NOT NULL, value double precision NOT NULL
) ON COMMIT DELETE ROWS
"""

# One statement: insert what is new, then fold exactly those rows into their 1-minute buckets
# (count, sum, min, max, and `last` by timestamp), so a redelivered batch adds nothing and a
# late reading corrects its bucket, at a cost that does not grow with the rows already there.
_INSERT = """
WITH ins AS (
    INSERT INTO readings (ts, sensor_id, metric, value)
    SELECT DISTINCT ON (sensor_id, metric, ts) ts, sensor_id, metric, value FROM readings_stage
    ORDER BY sensor_id, metric, ts
    ON CONFLICT ON CONSTRAINT readings_key DO NOTHING
    RETURNING sensor_id, metric, ts, value
), agg AS (
    SELECT date_trunc('minute', ts) AS bucket, sensor_id, metric, count(*)::int AS n, sum(value) AS s,
           min(value) AS mn, max(value) AS mx, (array_agg(value ORDER BY ts DESC))[1] AS last, max(ts) AS last_ts
    FROM ins GROUP BY 1, 2, 3
), up AS (
    INSERT INTO readings_1m AS r (bucket, sensor_id, metric, n, mean, min, max, last, sum, last_ts)
    SELECT bucket, sensor_id, metric, n, s / n, mn, mx, last, s, last_ts FROM agg
    ON CONFLICT (sensor_id, metric, bucket) DO UPDATE SET
        n = r.n + EXCLUDED.n,
        sum = r.sum + EXCLUDED.sum,
        mean = (r.sum + EXCLUDED.sum) / (r.n + EXCLUDED.n),
        min = LEAST(r.min, EXCLUDED.min),
        max = GREATEST(r.max, EXCLUDED.max),
        last = CASE WHEN EXCLUDED.last_ts > r.last_ts THEN EXCLUDED.last ELSE r.last END,
        last_ts = GREATEST(r.last_ts, EXCLUDED.last_ts)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM up)
"""


@dataclass(frozen=True)
class WriteResult:
    rows_in: int
    rows_inserted: int
    buckets_touched: int
    claim: Claim = Claim.NEXT
    expected_offset: int | None = None


def write_readings(
    conn: psycopg.Connection, readings: Iterable[Reading], at: Position | None = None, *, allow_jump: bool = False
) -> WriteResult:
    """Write a batch in one transaction; safe to call again with the same batch.

    With ``at``, the record's offset is claimed in the same transaction (see ``offset_ledger``):
    nothing is written unless it is the next offset of its partition.
    """
    rows_in = 0
    with conn.transaction(), conn.cursor() as cur:
        if at is not None:
            claimed: ClaimResult = claim_offset(cur, at, allow_jump=allow_jump)
            if claimed.claim is not Claim.NEXT:
                return WriteResult(0, 0, 0, claimed.claim, claimed.expected)
        cur.execute(_STAGE)
        with cur.copy("COPY readings_stage (ts, sensor_id, metric, value) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["timestamptz", "text", "text", "float8"])
            for r in readings:
                for metric, value in r.metrics.items():
                    copy.write_row((r.ts, r.sensor_id, metric, value))
                    rows_in += 1
        cur.execute(_INSERT)
        inserted, touched = cur.fetchone()  # type: ignore[misc]
    return WriteResult(rows_in, int(inserted), int(touched))
