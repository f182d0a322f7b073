"""Webhook signatures: what a receiver accepts and what it must refuse."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioc.alerting.signing import (
    NOTIFICATION_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureRejected,
    signed_headers,
    verify,
)

SECRET = "test-secret-0123456789"
NOW = datetime(2025, 11, 20, 1, 0, tzinfo=UTC)
BODY = '{"notification_id":"n1","text":"Lũ <&\\"\'>"}'.encode()


def reason(body: bytes, headers: dict[str, str], secret: str = SECRET, now: datetime = NOW, **kw: float) -> str:
    with pytest.raises(SignatureRejected) as ei:
        verify(body, headers, secret, now, **kw)
    return ei.value.reason


def test_good_signature_is_accepted_and_matches_an_independent_hmac() -> None:
    h = signed_headers(BODY, SECRET, "n1", NOW)
    verify(BODY, h, SECRET, NOW)
    ts = h[TIMESTAMP_HEADER]
    assert ts == str(int(NOW.timestamp()))
    expected = hmac.new(SECRET.encode(), ts.encode() + b"." + BODY, hashlib.sha256).hexdigest()
    assert h[SIGNATURE_HEADER] == "sha256=" + expected
    assert h[NOTIFICATION_ID_HEADER] == "n1"


def test_header_names_are_case_insensitive() -> None:
    h = {k.lower(): v for k, v in signed_headers(BODY, SECRET, "n1", NOW).items()}
    verify(BODY, h, SECRET, NOW)


def test_tampered_body_is_rejected() -> None:
    h = signed_headers(BODY, SECRET, "n1", NOW)
    assert reason(BODY.replace(b"n1", b"n2"), h) == "bad_signature"
    assert reason(BODY + b" ", h) == "bad_signature"


def test_wrong_secret_is_rejected() -> None:
    h = signed_headers(BODY, "another-secret-xyz", "n1", NOW)
    assert reason(BODY, h) == "bad_signature"


def test_timestamp_is_covered_by_the_signature() -> None:
    """Re-stamping a captured request with a fresh timestamp (a replay) breaks the signature."""
    h = signed_headers(BODY, SECRET, "n1", NOW - timedelta(hours=1))
    h[TIMESTAMP_HEADER] = str(int(NOW.timestamp()))
    assert reason(BODY, h) == "bad_signature"


@pytest.mark.parametrize("offset_s,expected", [(301, "stale"), (3600, "stale"), (-301, "future"), (-86400, "future")])
def test_stale_and_future_timestamps_are_rejected(offset_s: int, expected: str) -> None:
    h = signed_headers(BODY, SECRET, "n1", NOW)
    assert reason(BODY, h, now=NOW + timedelta(seconds=offset_s)) == expected


@pytest.mark.parametrize("offset_s", [0, 299, 300, -300])
def test_inside_the_tolerance_is_accepted(offset_s: int) -> None:
    h = signed_headers(BODY, SECRET, "n1", NOW)
    verify(BODY, h, SECRET, NOW + timedelta(seconds=offset_s))


def test_tolerance_is_configurable() -> None:
    h = signed_headers(BODY, SECRET, "n1", NOW)
    assert reason(BODY, h, now=NOW + timedelta(seconds=31), tolerance_s=30) == "stale"
    verify(BODY, h, SECRET, NOW + timedelta(seconds=31), tolerance_s=60)


@pytest.mark.parametrize("drop", [SIGNATURE_HEADER, TIMESTAMP_HEADER])
def test_missing_header_is_rejected(drop: str) -> None:
    h = signed_headers(BODY, SECRET, "n1", NOW)
    del h[drop]
    assert reason(BODY, h) == "missing_header"


@pytest.mark.parametrize("value,expected", [
    ("md5=abc", "bad_scheme"),
    ("abc", "bad_scheme"),
    ("sha256=", "bad_signature"),
    ("sha256=Ωå∂", "bad_signature"),
])
def test_malformed_signature_is_rejected(value: str, expected: str) -> None:
    h = signed_headers(BODY, SECRET, "n1", NOW)
    h[SIGNATURE_HEADER] = value
    assert reason(BODY, h) == expected


@pytest.mark.parametrize("ts", ["", "abc", "-5", "1.5", "١٢٣", "9" * 40])
def test_malformed_timestamp_is_rejected(ts: str) -> None:
    h = signed_headers(BODY, SECRET, "n1", NOW)
    h[TIMESTAMP_HEADER] = ts
    assert reason(BODY, h) == "bad_timestamp"


def test_empty_secret_and_naive_time_are_refused() -> None:
    with pytest.raises(ValueError, match="IOC_WEBHOOK_SECRET"):
        signed_headers(BODY, "", "n1", NOW)
    with pytest.raises(ValueError, match="aware"):
        signed_headers(BODY, SECRET, "n1", datetime(2025, 1, 1))


@given(body=st.binary(max_size=2000), secret=st.text(min_size=1, max_size=64), flip=st.integers(min_value=0))
def test_any_single_bit_flip_in_the_body_is_detected(body: bytes, secret: str, flip: int) -> None:
    h = signed_headers(body, secret, "n", NOW)
    verify(body, h, secret, NOW)
    if body:
        i = flip % (len(body) * 8)
        mutated = bytearray(body)
        mutated[i // 8] ^= 1 << (i % 8)
        with pytest.raises(SignatureRejected):
            verify(bytes(mutated), h, secret, NOW)
