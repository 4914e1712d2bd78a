"""Server messages parsed under one guard: no message can end a session.

A server (or anything between it and us) can send anything: invalid JSON,
nesting deep enough to exhaust Python's recursion limit, ``NaN`` or
``Infinity`` numbers, megabytes of text, wrong types. :func:`parse_message`
turns one text frame into a JSON object or a :class:`Rejected` with a short,
bounded reason;  a handler that raises anything on one message has it
dropped (:func:`describe_failure` says so in one bounded line). Log lines that
carry server text go through :func:`excerpt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: Longest piece of server text that reaches a log line.
MAX_LOGGED_CHARS = 200
#: Largest text frame parsed at all (the WebSocket's own limit is 1 MiB).
MAX_MESSAGE_BYTES = 2**20
#: Shorter excerpts for the parts of a line that only identify (a number, a kind).
MAX_NUMBER_CHARS = 20
MAX_KIND_CHARS = 40
MAX_PARSER_ERROR_CHARS = 80


@dataclass(frozen=True)
class Rejected:
    """A message that was dropped, and why (short, safe to log)."""

    reason: str


def excerpt(text: object, limit: int = MAX_LOGGED_CHARS) -> str:
    """``text`` as a string of at most ``limit`` characters, marked when cut."""
    s = text if isinstance(text, str) else repr(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... ({len(s)} chars)"


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf or nan (1e999 parses as inf)
        raise ValueError(f"non-finite number {text[:MAX_NUMBER_CHARS]}")
    return value


def parse_message(
    text: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES
) -> dict[str, Any] | Rejected:
    """One server text frame as a JSON object, or why it was rejected."""
    if len(text) > max_bytes:
        return Rejected(f"message of {len(text)} bytes is over the {max_bytes}-byte limit")
    try:
        msg = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError:
        return Rejected("message nested too deeply")
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        return Rejected(f"not valid JSON ({excerpt(str(exc), MAX_PARSER_ERROR_CHARS)})")
    if not isinstance(msg, dict):
        return Rejected(f"not a JSON object ({type(msg).__name__})")
    return msg


def describe_failure(kind: object, exc: BaseException) -> str:
    """One bounded line for a message whose handling raised ``exc``."""
    what = excerpt(kind, MAX_KIND_CHARS)
    return f"dropped a server message ({what}): {type(exc).__name__}: {excerpt(str(exc))}"
