"""Late transcripts: a live session's spooled audio, transcribed later, joins its session.

Audio a live session could not stream in real time (an outage, a stall, a
backlog past the live window) is spooled as ``live-gap`` recordings tagged
with the session id and their sample offset in the session's stream. When
the uploader has a recording's transcript, :class:`LateTranscripts` appends
it to the session's JSONL file at that offset, marked ``"late": true``, and
publishes it as a final turn (``late=True``), so the page, the log and anyone
reading the file see every word once, in stream order by its times.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from appliance import events as ev

log = logging.getLogger(__name__)

#: The spool origin of a live session's undelivered audio.
LIVE_GAP_ORIGIN = "live-gap"
#: Session ids are ours (hex); anything else from the database never names a file.
_SESSION_ID = re.compile(r"[0-9a-f]{1,64}")


def session_transcript_path(state_dir: Path, session_id: str) -> Path:
    """The JSONL file of one live session (refuses an id that could leave the directory)."""
    if not _SESSION_ID.fullmatch(session_id):
        raise ValueError("not a session id")
    return Path(state_dir) / "transcripts" / f"{session_id}.jsonl"


@dataclass(frozen=True)
class LateTurn:
    """One spooled range's transcript, placed in its session's stream time."""

    session_id: str
    recording_id: str
    transcript_id: str | None
    offset_ms: int
    text: str
    words: tuple[ev.Word, ...]

    def record(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "late": True,
            "recording_id": self.recording_id,
            "transcript_id": self.transcript_id,
            "offset_ms": self.offset_ms,
            "text": self.text,
            "words": list(self.words),
            "time": time.time(),
        }


def late_turn(
    session_id: str,
    recording_id: str,
    transcript_id: str | None,
    session_offset: int,
    rate: int,
    transcript: dict[str, Any],
) -> LateTurn:
    """The late turn of one pre-recorded transcript (word times shifted to the session's)."""
    offset_ms = round(session_offset * 1000 / rate)
    words = []
    for word in transcript.get("words") or ():
        if not isinstance(word, dict):
            continue
        start, end = word.get("start"), word.get("end")
        if not (_finite(start) and _finite(end)):
            continue
        item: ev.Word = {
            "text": str(word.get("text", "")),
            "start_ms": offset_ms + round(start),
            "end_ms": offset_ms + round(end),
            "confidence": float(word["confidence"]) if _finite(word.get("confidence")) else 0.0,
        }
        if isinstance(word.get("speaker"), str):
            item["speaker"] = word["speaker"]
        words.append(item)
    text = transcript.get("text")
    return LateTurn(
        session_id,
        recording_id,
        transcript_id,
        offset_ms,
        text if isinstance(text, str) else " ".join(w["text"] for w in words),
        tuple(words),
    )


def _already_joined(path: Path, recording_id: str) -> bool:
    """Does the session file already hold this recording's late turn?"""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if recording_id in line:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if record.get("late") and record.get("recording_id") == recording_id:
                        return True
    except FileNotFoundError:
        return False
    return False


def _finite(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class LateTranscripts:
    """Joins each completed ``live-gap`` transcript to its live session (file and feed)."""

    def __init__(self, state_dir: Path, events: ev.EventBus | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.events = events

    def __call__(self, row: Any, transcript: dict[str, Any]) -> LateTurn | None:
        """Called by the uploader with a completed recording's row and transcript."""
        if row.origin != LIVE_GAP_ORIGIN or not row.session_id or row.session_offset is None:
            return None
        try:
            path = session_transcript_path(self.state_dir, row.session_id)
        except ValueError:
            log.warning("recording %s names no usable session; not joined", row.id)
            return None
        if _already_joined(path, row.id):
            return None  # a crash after joining, before the state changed: not twice
        turn = late_turn(
            row.session_id, row.id, row.transcript_id, row.session_offset, row.rate, transcript
        )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(turn.record(), ensure_ascii=False) + "\n")
        log.info("late transcript of %s joined session %s: %s", row.id, row.session_id, turn.text)
        if self.events is not None:
            self.events.publish(
                ev.TurnFinal(
                    session_id=turn.session_id,
                    turn_order=None,
                    text=turn.text,
                    words=turn.words,
                    late=True,
                    offset_ms=turn.offset_ms,
                )
            )
        return turn
