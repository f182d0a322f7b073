"""Which Kafka offsets a consumer has really applied, kept beside the data in one transaction.

Kafka's committed offset is where a consumer starts reading; it can run ahead of the database
(Faust commits a "gap" when a stale prefetched batch follows a seek, see
``streams/faust_compat.py``). Each writer therefore claims its record's offset inside its own
transaction: the next offset is applied, an older one was applied already, and a newer one means
something in between was skipped and must be fetched again.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg


class Claim(enum.Enum):
    NEXT = "next"  # the expected offset (or the first ever seen): apply it
    DONE = "done"  # applied before: a redelivery, change nothing
    AHEAD = "ahead"  # offsets before it were never applied: fetch them first


@dataclass(frozen=True)
class Position:
    """A Kafka record's place: consumer stream (group and topic), partition, offset.

    ``first_record`` is the digest of the value of a partition's offset-0 record (None at any other
    offset): the ledger keeps it, so a topic re-created by a broker that lost its log is told
    apart from a redelivery of the old one.
    """

    stream: str
    partition: int
    offset: int
    first_record: bytes | None = None

    @classmethod
    def of(cls, stream: str, partition: int, offset: int, value: bytes | None) -> Position:
        """The position of a record with this value; hashes only the offset-0 record.

        >>> Position.of("g:t", 0, 5, b"x").first_record is None
        True
        >>> Position.of("g:t", 0, 0, b"x").first_record != Position.of("g:t", 0, 0, b"y").first_record
        True
        """
        return cls(stream, partition, offset, record_digest(value) if offset == 0 else None)


def record_digest(value: bytes | None) -> bytes:
    return hashlib.blake2b(value or b"", digest_size=16).digest()


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    expected: int  # the next offset the ledger wanted


def claim_offset(cur: psycopg.Cursor, at: Position, *, allow_jump: bool = False) -> ClaimResult:  # type: ignore[type-arg]
    """Run inside the writer's transaction, before it writes; advances the ledger on NEXT.

    ``allow_jump`` accepts an offset past the expected one: only for records the broker no
    longer has (retention), which the caller must report as lost.
    """
    if at.offset == 0 or allow_jump:
        cur.execute(
            "INSERT INTO consumed_offsets (stream, kafka_partition, next_offset, first_record) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING next_offset",
            (at.stream, at.partition, at.offset + 1, at.first_record),
        )
        if cur.fetchone() is not None:
            return ClaimResult(Claim.NEXT, at.offset)
    cur.execute(
        "SELECT next_offset FROM consumed_offsets WHERE stream = %s AND kafka_partition = %s FOR UPDATE",
        (at.stream, at.partition),
    )
    row = cur.fetchone()
    if row is None:
        # A partition's first record must be offset 0: a worker that first sees a later one (a
        # record skipped on the way, as a stale fetch after a rebalance can do) reads from 0; if
        # the broker no longer has those (retention), the caller reports them lost and jumps.
        return ClaimResult(Claim.AHEAD, 0)
    expected = int(row[0])
    if at.offset < expected:
        return ClaimResult(Claim.DONE, expected)
    if at.offset > expected and not allow_jump:
        return ClaimResult(Claim.AHEAD, expected)
    cur.execute(
        "UPDATE consumed_offsets SET next_offset = %s, updated_at = now() WHERE stream = %s AND kafka_partition = %s",
        (at.offset + 1, at.stream, at.partition),
    )
    return ClaimResult(Claim.NEXT, expected)


def claim_ranges(cur: psycopg.Cursor, stream: str, ranges: Sequence[tuple[int, int, int]]) -> bool:  # type: ignore[type-arg]
    """Claim ``(partition, first, last)`` offset ranges in one statement, inside the writer's transaction.

    True only if every range starts at its partition's next offset (then all advance); otherwise
    nothing may be written and the caller rolls back and claims record by record, which sorts out
    redeliveries, gaps and a partition's first record.
    """
    if not ranges:
        return True
    cur.execute(
        "UPDATE consumed_offsets c SET next_offset = v.last + 1, updated_at = now()"
        " FROM unnest(%b::int[], %b::bigint[], %b::bigint[]) AS v(p, first, last)"  # binary arrays: see readings_sink
        " WHERE c.stream = %s AND c.kafka_partition = v.p AND c.next_offset = v.first RETURNING c.kafka_partition",
        ([r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges], stream),
    )
    return len(cur.fetchall()) == len({r[0] for r in ranges})


def next_offsets(conn: psycopg.Connection, stream: str) -> dict[int, int]:
    """Per partition, the next offset to apply (for gap checks and the health dashboard)."""
    rows = conn.execute(
        "SELECT kafka_partition, next_offset FROM consumed_offsets WHERE stream = %s", (stream,)
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


def first_record(conn: psycopg.Connection, stream: str, partition: int) -> bytes | None:
    """The digest of the offset-0 record the partition's ledger started from (None if unknown)."""
    row = conn.execute("SELECT first_record FROM consumed_offsets WHERE stream = %s AND kafka_partition = %s",
                       (stream, partition)).fetchone()
    return None if row is None or row[0] is None else bytes(row[0])


def forget_partition(conn: psycopg.Connection, stream: str, partition: int) -> None:
    """The topic was re-created (a broker that lost its log): start the partition afresh at 0, and
    forget which of its records' alerts were applied (those offsets named the old log)."""
    conn.execute("DELETE FROM consumed_offsets WHERE stream = ANY(%s) AND kafka_partition = %s",
                 ([stream, alerts_stream(stream)], partition))


def alerts_stream(stream: str) -> str:
    """The ledger key of the alerts that a stream's records produced (their findings, applied by
    the worker that stored them). Its offsets are sparse: only records that produced findings.

    >>> alerts_stream("ioc:khanhhoa.readings")
    'ioc:khanhhoa.readings>alerts'
    """
    return f"{stream}>alerts"


def claim_sparse(cur: psycopg.Cursor, stream: str, newest: Mapping[int, int]) -> dict[int, int]:  # type: ignore[type-arg]
    """Claim, inside the writer's transaction, every offset up to ``newest[partition]`` whose output
    it applies; returns each partition's previous next offset: offsets below it were applied before
    (a redelivery) and must be skipped. Unlike :func:`claim_offset` gaps are normal here (records
    without output claim nothing), so the ledger only moves forward. Rows are locked in partition
    order, so two workers overlapping during a rebalance cannot deadlock.
    """
    if not newest:
        return {}
    parts = sorted(newest)
    cur.execute(
        "INSERT INTO consumed_offsets (stream, kafka_partition, next_offset)"
        " SELECT %s, p, 0 FROM unnest(%s::int[]) AS p ON CONFLICT DO NOTHING",
        (stream, parts),
    )
    cur.execute(
        "SELECT kafka_partition, next_offset FROM consumed_offsets WHERE stream = %s AND kafka_partition = ANY(%s)"
        " ORDER BY kafka_partition FOR UPDATE",
        (stream, parts),
    )
    before = {int(p): int(o) for p, o in cur.fetchall()}
    cur.execute(
        "UPDATE consumed_offsets c SET next_offset = v.upto + 1, updated_at = now()"
        " FROM unnest(%s::int[], %s::bigint[]) AS v(p, upto)"
        " WHERE c.stream = %s AND c.kafka_partition = v.p AND c.next_offset <= v.upto",
        (parts, [newest[p] for p in parts], stream),
    )
    return before
