"""Logging is configured once, by the entry point, with rich when stderr is a terminal.

Secrets are masked at their source (``Settings.masked``, ``mask_url``); this module is the last
line of defence. Every log record, from our code or a library's (Faust, aiokafka, psycopg), and
every uncaught traceback passes through :func:`redact`, which hides the secrets this process
knows about (passwords in ``IOC_*`` URLs, tokens, webhook secrets, in plain and URL-encoded
form) and any ``scheme://user:password@`` it meets.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"
#: Shorter values are not treated as secrets: masking "ioc" or "1" would garble every line.
MIN_SECRET_LEN = 6
_URL_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@'\"]*):(?P<pw>[^\s@'\"]+)@")
_URL_CUTS = frozenset("@#/?:")
_SECRET_ENV = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY)$")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret that contains another is masked whole


def remember_secret(value: str | None, *, pieces: bool = True) -> None:
    """Mask ``value`` (and its URL-encoded forms) in every log line and traceback from now on."""
    global _secrets
    if not value or len(value) < MIN_SECRET_LEN:
        return
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), quote(value), unquote(value)}
    if pieces:
        # A URL parser cuts an unencoded password at '@', '#', '/', '?' or ':', and another masker
        # may then hide one piece and print the rest: every run between those characters is secret too.
        cuts = [0, *(i + 1 for i, c in enumerate(value) if c in _URL_CUTS), len(value) + 1]
        forms |= {value[a:b - 1] for a in cuts for b in cuts if b - 1 > a}
    with _lock:
        _secrets = tuple(sorted(set(_secrets) | {f for f in forms if len(f) >= MIN_SECRET_LEN}, key=len, reverse=True))


def remember_url(url: str | None) -> None:
    """Remember the password of a URL, even a malformed one; an http(s) URL whose path or query may
    hold a token is remembered whole."""
    if not url or "@" not in url and "://" not in url:
        return
    try:
        parts = urlsplit(url)
        password, scheme, rest = parts.password, parts.scheme, parts.path + parts.query
    except ValueError:
        password, scheme, rest = None, "", ""
    remember_secret(password)
    if "@" in url:  # unencoded '#', '/', '?' or '@' fool urlsplit: user:<everything>@ up to the last '@'
        userinfo = url.rpartition("@")[0].split("//", 1)[-1]
        _, sep, guess = userinfo.partition(":")
        if sep:
            remember_secret(guess)
    if scheme in ("http", "https") and len(rest) >= 16:  # webhook URLs carry their token in the path
        remember_secret(url, pieces=False)
        remember_secret(rest.lstrip("/"), pieces=False)


def remember_environment(environ: Mapping[str, str]) -> None:
    """Secrets configured through ``IOC_*`` variables, known before the settings are even parsed."""
    for name, value in environ.items():
        if not name.startswith("IOC_") or not value:
            continue
        if _SECRET_ENV.search(name):
            remember_secret(value.strip())
        remember_url(value.strip())  # whole: an unencoded password may hold spaces or commas
        if "," in value or value.lstrip().startswith("["):  # a list of URLs (IOC_WEBHOOK_URLS)
            for part in value.strip("[] ").split(","):
                remember_url(part.strip("\"' "))


def remember_env_file(path: Path) -> None:
    """The stack's env file (``KEY=value`` lines) is a fallback source of URLs with passwords."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return
    remember_environment(dict(line.split("=", 1) for line in lines if "=" in line))


def known_secrets() -> tuple[str, ...]:
    return _secrets


def redact(text: str) -> str:
    """Mask known secrets and URL passwords.

    >>> redact("connect postgresql://ioc:hunter22@db:5432/ioc failed")
    'connect postgresql://ioc:***@db:5432/ioc failed'
    """
    for s in _secrets:
        if s in text:
            text = text.replace(s, MASK)
    if "://" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string is the handler's problem, not ours
        message = f"{record.msg!s} {record.args!r}"
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and record.exc_info[0] is not None:
        text = "".join(traceback.format_exception(*record.exc_info))
        clean_exc = redact(text)
        if clean_exc != text:  # the formatter then prints our text instead of formatting exc_info
            record.exc_text = clean_exc.rstrip("\n")
            record.exc_info = None
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


_factory_installed = False


def install_redaction(environ: Mapping[str, str] | None = None) -> None:
    """Redact every log record (a record factory sees records of every logger and handler) and
    every uncaught exception; idempotent."""
    global _factory_installed
    environ = os.environ if environ is None else environ
    remember_environment(environ)
    remember_env_file(Path(environ.get("IOC_STACK_ENV", ".ioc/stack/env")))
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(factory)

    def excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        sys.stderr.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        sys.stderr.write(redact(f"Exception in thread {name}:\n{text}"))

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook


def remember_values(values: Iterable[object]) -> None:
    """Remember secrets among settings values: SecretStr-like objects and URLs (plain or in lists)."""
    for v in values:
        getter = getattr(v, "get_secret_value", None)
        if callable(getter):
            remember_secret(str(getter()))
        elif isinstance(v, str):
            remember_url(v)
        elif isinstance(v, list | tuple):
            remember_values(v)


def setup_logging(level: str = "INFO") -> None:
    install_redaction()
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(rich_tracebacks=True, show_path=False)
        fmt = "%(name)s: %(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
