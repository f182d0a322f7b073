"""Recordings as gzipped JSON lines: ``{"t": <send/receive time>, "topic": ..., "payload": {...}}``.

One format for simulated runs and live recordings, so ``replay`` takes either. A payload that is a
single line of valid JSON is embedded verbatim (msgspec.Raw keeps its exact bytes); anything else
(truncated JSON, binary) is stored base64-encoded with ``"b64": true``. Files are gzipped with
mtime 0 and no name, so the same run gives byte-identical files.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

import msgspec

from sensors_sim.errors import RecordingError


class Line(msgspec.Struct, omit_defaults=True):
    t: float
    topic: str
    payload: msgspec.Raw
    b64: bool = False


@dataclass(frozen=True)
class Message:
    t: float
    topic: str
    payload: bytes


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Line)
_json_check = msgspec.json.Decoder()


def embeddable(payload: bytes) -> bool:
    """Whether a payload can be stored verbatim (one line of valid JSON)."""
    if b"\n" in payload or b"\r" in payload:
        return False
    try:
        _json_check.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return True


def encode_lines(ts: Iterable[float], topics: Iterable[str], payloads: Iterable[bytes],
                 valid_json: Iterable[bool]) -> bytes:
    """Newline-terminated lines for a batch of messages."""
    lines = [
        Line(t, topic, msgspec.Raw(p)) if ok else Line(t, topic, msgspec.Raw(_encoder.encode(base64.b64encode(p).decode())), True)
        for t, topic, p, ok in zip(ts, topics, payloads, valid_json, strict=True)
    ]
    return _encoder.encode_lines(lines)


class Writer:
    """Deterministic gzip JSON-lines writer."""

    def __init__(self, path: Path, compresslevel: int = 6) -> None:
        self.path = path
        self._raw: IO[bytes] = path.open("wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=compresslevel)
        self.count = 0

    def write(self, data: bytes, n: int) -> None:
        self._gz.write(data)
        self.count += n

    def close(self) -> None:
        self._gz.close()
        self._raw.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def read(path: Path) -> Iterator[Message]:
    """Messages of a recording in file order; errors name the file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    line = _decoder.decode(raw)
                    payload = bytes(line.payload)
                    if line.b64:
                        payload = base64.b64decode(msgspec.json.decode(payload))
                except (msgspec.DecodeError, ValueError) as e:
                    raise RecordingError(f"{path}:{lineno}: not a recording line: {e}") from e
                yield Message(line.t, line.topic, payload)
    except FileNotFoundError as e:
        raise RecordingError(f"{path}: no such recording") from e
    except (OSError, EOFError) as e:
        raise RecordingError(f"{path}: cannot read: {e}") from e
