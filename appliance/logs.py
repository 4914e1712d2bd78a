"""Logging: readable on a terminal, structured in the journal, never leaking a secret.

Under systemd (``$JOURNAL_STREAM`` set, or ``--journal``) records go to journald
with fields such as ``SESSION_ID`` and ``MODE`` (pass them with
``extra={"SESSION_ID": ...}`` or bind them with ``log_context``). Every record
passes through ``RedactingFilter`` first, which scrubs registered secrets and
credential-looking URL parameters from the message, its arguments and any
exception text.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from appliance.secrets import redact

# Fields attached to every record logged inside a ``log_context`` block.
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("log_context", default={})  # noqa: B039
JOURNAL_FIELDS = ("SESSION_ID", "MODE", "RECORDING_ID", "STATE")


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Attach journald fields (e.g. SESSION_ID, MODE) to records logged in this block."""
    merged = {**_context.get(), **{k: str(v) for k, v in fields.items()}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class RedactingFilter(logging.Filter):
    """Render the message, scrub secrets from it and from exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _TerminalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [f"{k.lower()}={getattr(record, k)}" for k in JOURNAL_FIELDS if hasattr(record, k)]
        return f"{text} [{' '.join(fields)}]" if fields else text


def running_under_journal() -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM)."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(level: str = "INFO", *, journal: bool | None = None) -> None:
    """Configure the root logger once: journald under systemd, else the terminal."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    use_journal = running_under_journal() if journal is None else journal
    handler: logging.Handler
    if use_journal:
        from systemd.journal import JournalHandler  # imported only under systemd

        handler = JournalHandler(SYSLOG_IDENTIFIER="appliance")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            _TerminalFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party libraries log URLs and headers at DEBUG; keep them quieter than us.
    # httpx logs every request at INFO: our own lines say what matters, with context.
    for noisy in ("websockets", "httpx", "httpcore", "asyncio", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
