"""The transcript a summary is asked for, as plain lines (``Speaker A: ...`` where known).

A live session's JSONL holds its final turns and the late turns of spooled
gaps, each in the file in the order it arrived; they are put back in stream
order by their first word's time. A recording's transcript is its utterances
(with ``speaker_labels``) or its text. Nothing here does I/O but reading the
one file named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _speaker_line(speaker: object, text: str) -> str:
    return f"Speaker {speaker}: {text}" if isinstance(speaker, str) and speaker else text


def _start_ms(record: dict[str, Any]) -> float:
    words = record.get("words")
    if isinstance(words, list) and words and isinstance(words[0], dict):
        start = words[0].get("start_ms")
        if isinstance(start, int | float) and math.isfinite(start):
            return float(start)
    offset = record.get("offset_ms")
    return float(offset) if isinstance(offset, int | float) and math.isfinite(offset) else math.inf


def session_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """The turns of a session's JSONL records, in stream order (live and late alike)."""
    turns = [r for r in records if isinstance(r.get("text"), str) and r["text"].strip()]
    ordered = sorted(enumerate(turns), key=lambda it: (_start_ms(it[1]), it[0]))
    return [_speaker_line(r.get("speaker"), r["text"].strip()) for _, r in ordered]


def read_session(path: Path) -> str:
    """A session's transcript from its JSONL (lines that are not JSON objects are skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return "\n".join(session_lines(records))


def recording_lines(transcript: dict[str, Any]) -> list[str]:
    """A pre-recorded transcript's utterances with their speakers, or its text."""
    utterances = transcript.get("utterances")
    if isinstance(utterances, list) and utterances:
        lines = [
            _speaker_line(u.get("speaker"), u["text"].strip())
            for u in utterances
            if isinstance(u, dict) and isinstance(u.get("text"), str) and u["text"].strip()
        ]
        if lines:
            return lines
    text = transcript.get("text")
    return [text.strip()] if isinstance(text, str) and text.strip() else []


def read_recording(path: Path) -> str:
    """A recording's transcript from its ``transcript.json``."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return "\n".join(recording_lines(data if isinstance(data, dict) else {}))
