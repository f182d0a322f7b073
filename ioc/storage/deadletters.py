"""The dead-letter store: every rejected payload with its reason, raw bytes and origin."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import psycopg

from ioc.storage.offset_ledger import Claim, Position, claim_offset


class DeadLetter(msgspec.Struct, frozen=True):
    """One rejected message as it travels on the dead-letter topic."""

    received_at: datetime
    source: str  # "mqtt" for the bridge, "kafka" for the worker
    reason: str
    detail: str
    topic: str
    raw: bytes
    partition: int | None = None
    offset: int | None = None
    count: int = 1  # arrivals this letter stands for (the bridge aggregates a rate-limited flood)

    @property
    def key(self) -> str:
        """Content key: a redelivered reject is stored once, like a duplicate reading."""
        h = hashlib.sha256(self.topic.encode("utf-8", "replace") + b"\0" + self.raw)
        if self.reason == "too_large":  # the raw bytes are a truncated sample; the detail has the full digest
            h.update(b"\0" + self.detail.encode("utf-8", "replace"))
        return h.hexdigest()


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[DeadLetter])


def encode_batch(items: Sequence[DeadLetter]) -> bytes:
    return _encoder.encode(list(items))


def decode_batch(raw: bytes) -> list[DeadLetter]:
    return _decoder.decode(raw)


def _text(s: str) -> str:
    """PostgreSQL text holds neither NUL nor lone surrogates; a letter that quotes them must still be stored."""
    return s.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


@dataclass(frozen=True)
class DeadLetterWrite:
    new: int  # letters new to the store, or replays that failed again
    claim: Claim = Claim.NEXT
    expected_offset: int | None = None


def write_deadletters(
    conn: psycopg.Connection, items: Iterable[DeadLetter], at: Position | None = None, *, allow_jump: bool = False
) -> DeadLetterWrite:
    """Insert idempotently (keyed by content), counting every arrival of the same content.

    With ``at`` the Kafka record is claimed in the same transaction, so a batch redelivered
    after a crash is not counted twice. Returns how many letters were new or re-failed replays.
    """
    rows = [
        (d.key, d.received_at, d.source[:32], _text(d.reason[:64]), _text(d.detail[:1000]), _text(d.topic[:512]),
         d.partition, d.offset, d.raw, d.received_at, max(1, d.count))
        for d in items
    ]
    with conn.transaction(), conn.cursor() as cur:
        if at is not None:
            claimed = claim_offset(cur, at, allow_jump=allow_jump)
            if claimed.claim is not Claim.NEXT:
                return DeadLetterWrite(0, claimed.claim, claimed.expected)
        if not rows:
            return DeadLetterWrite(0)
        cur.execute(
            "SELECT count(*) FROM deadletters WHERE dl_key = ANY(%s) AND replayed_at IS NOT NULL",
            (list({r[0] for r in rows}),),
        )
        refailed = int(cur.fetchone()[0])  # type: ignore[index]
        cur.executemany(
            "INSERT INTO deadletters (dl_key, received_at, source, reason, detail, topic, kafka_partition,"
            " kafka_offset, raw, last_seen_at, occurrences) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            # Every arrival counts; a replayed letter that fails again becomes pending again.
            " ON CONFLICT (dl_key) DO UPDATE SET occurrences = deadletters.occurrences + EXCLUDED.occurrences,"
            " last_seen_at = GREATEST(deadletters.last_seen_at, EXCLUDED.last_seen_at),"
            " replayed_at = NULL,"
            " reason = CASE WHEN deadletters.replayed_at IS NULL THEN deadletters.reason ELSE EXCLUDED.reason END,"
            " detail = CASE WHEN deadletters.replayed_at IS NULL THEN deadletters.detail ELSE EXCLUDED.detail END"
            " RETURNING xmax = 0",
            rows,
            returning=True,
        )
        new = 0
        while True:
            row = cur.fetchone()
            if row is not None and row[0]:
                new += 1
            if not cur.nextset():
                break
    return DeadLetterWrite(new + refailed)


@dataclass(frozen=True)
class DeadLetterRow:
    dl_id: int
    received_at: datetime
    source: str
    reason: str
    detail: str
    topic: str | None
    raw: bytes
    replayed_at: datetime | None


def list_deadletters(
    conn: psycopg.Connection, *, reason: str | None = None, limit: int = 50, include_replayed: bool = False,
    source: str | None = None, replayable: bool = False,
) -> list[DeadLetterRow]:
    """Oldest first. Every filter is applied before ``LIMIT``, so ``limit`` counts matching letters.

    ``replayable`` keeps only letters that carry a topic to publish to again.
    """
    rows = conn.execute(
        "SELECT dl_id, received_at, source, reason, detail, topic, raw, replayed_at FROM deadletters"
        " WHERE (%(reason)s::text IS NULL OR reason = %(reason)s) AND (%(all)s OR replayed_at IS NULL)"
        " AND (%(source)s::text IS NULL OR source = %(source)s)"
        " AND (NOT %(replayable)s OR coalesce(topic, '') <> '')"
        " ORDER BY dl_id LIMIT %(limit)s",
        {"reason": reason, "all": include_replayed, "limit": limit, "source": source, "replayable": replayable},
    ).fetchall()
    return [DeadLetterRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), r[7]) for r in rows]


def counts_by_reason(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT reason, count(*) FROM deadletters GROUP BY reason ORDER BY reason").fetchall())  # type: ignore[arg-type]


def mark_replayed(conn: psycopg.Connection, ids: Sequence[int]) -> None:
    conn.execute("UPDATE deadletters SET replayed_at = now() WHERE dl_id = ANY(%s)", (list(ids),))
