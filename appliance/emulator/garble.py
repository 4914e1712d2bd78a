"""Malformed server frames for the ``garble`` fault: what a robust client must survive.

Each mode turns one outgoing message into the text frames actually sent.
Only ``invalid_json`` loses the message; the others send an extra bad frame
before it, so a client that drops bad frames still hears everything real.
"""

from __future__ import annotations

import json
from typing import Any

#: mode -> what it sends (the README's table says the same).
GARBLE_MODES: dict[str, str] = {
    "invalid_json": "the message itself, cut short (the message is lost)",
    "unknown_type": "an extra message of an unknown type first",
    "deep_nesting": "an extra frame of deeply nested lists first (RecursionError in json.loads)",
    "nan": "an extra copy of the next Turn first, its word times NaN",
    "infinity": "an extra copy of the next Turn first, its word times Infinity",
    "huge_string": "an extra unknown-type message first, with one very long string field",
}
#: Modes that only apply to a message carrying word timings (a streaming Turn).
WORD_TIME_MODES = frozenset({"nan", "infinity"})
UNKNOWN_TYPE = "EmulatorUnknownEvent"


def applies_to(mode: str, message: dict[str, Any]) -> bool:
    """Whether ``mode`` can garble ``message`` (NaN word times need a Turn with words)."""
    if mode in WORD_TIME_MODES:
        return message.get("type") == "Turn" and bool(message.get("words"))
    return True


def nested_lists(depth: int) -> str:
    """``depth`` nested JSON lists: valid JSON that Python's json.loads cannot parse."""
    return "[" * depth + "]" * depth


def with_word_times(message: dict[str, Any], value: float) -> dict[str, Any]:
    """A copy of a Turn whose every word starts and ends at ``value`` (NaN, Infinity)."""
    words = [dict(word, start=value, end=value) for word in message.get("words", [])]
    return dict(message, words=words)


def garbled_frames(
    mode: str, message: dict[str, Any], nesting_depth: int, string_chars: int
) -> tuple[list[str], bool]:
    """The bad frames to send for ``message`` and whether the message itself follows."""
    text = json.dumps(message)
    if mode == "invalid_json":
        return [text[: -max(2, len(text) // 3)]], False
    if mode == "unknown_type":
        return [json.dumps({"type": UNKNOWN_TYPE, "note": "clients must ignore this"})], True
    if mode == "deep_nesting":
        return [nested_lists(nesting_depth)], True
    if mode == "nan":
        return [json.dumps(with_word_times(message, float("nan")))], True
    if mode == "infinity":
        return [json.dumps(with_word_times(message, float("inf")))], True
    if mode == "huge_string":
        return [json.dumps({"type": UNKNOWN_TYPE, "text": "x" * string_chars})], True
    raise ValueError(f"unknown garble mode {mode!r}")
