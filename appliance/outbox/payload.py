"""What the outbox sends: one finished transcript (and its summary, if stored) as JSON.

Two kinds of transcript leave the device:

* ``session``: a live session, from its JSONL file (final turns and the late
  turns of spooled gaps, in stream order);
* ``recording``: a field recording, from the pre-recorded transcript stored
  beside its audio.

Built from files on the device (blocking reads: call off the event loop).
Nothing here trusts an id: a session id names a file only through
:func:`appliance.late.session_transcript_path`, a recording id only through
the spool's checked paths. A summary stored beside the transcript
(``appliance.summary.stored``) goes with it when there is one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.late import session_transcript_path

if TYPE_CHECKING:
    from appliance.spool import Spool

log = logging.getLogger(__name__)

#: Bumped when a field is removed or changes meaning (adding one is compatible).
PAYLOAD_VERSION = 1
SESSION = "session"
RECORDING = "recording"
ITEM_KINDS = (SESSION, RECORDING)
#: The recording origin whose transcripts are delivered (a live gap joins its session).
DELIVERED_ORIGIN = "record"
#: What of a stored summary is sent.
SUMMARY_FIELDS = ("text", "model", "truncated", "made_at")
#: Fields of the pre-recorded transcript passed on as they are.
_RECORDING_FIELDS = ("text", "words", "utterances", "language_code", "audio_duration")


class Gone(Exception):
    """The transcript is no longer on the device (deleted by retention or by hand)."""


def stored_summary(
    state_dir: Path, spool: Spool, item_kind: str, item_id: str
) -> dict[str, Any] | None:
    """The summary stored beside this transcript, as JSON fields, or None.

    Read through ``appliance.summary.stored`` when this build has it (looked up at
    run time, so the outbox works without it); any trouble reading one leaves the
    summary out rather than holding the transcript back.
    """
    try:
        stored = importlib.import_module("appliance.summary.stored")
    except ImportError:
        return None
    try:
        found = stored.read_summary(state_dir, spool.root, item_kind, item_id)
    except Exception as exc:
        log.warning("summary of %s %s unreadable (%r); left out", item_kind, item_id, exc)
        return None
    if found is None or not dataclasses.is_dataclass(found) or isinstance(found, type):
        return None
    fields = dataclasses.asdict(found)
    return {k: fields[k] for k in SUMMARY_FIELDS if k in fields}


def session_payload(state_dir: Path, spool: Spool, session_id: str) -> dict[str, Any]:
    """A live session's transcript: its turns in stream order, and their text joined."""
    path = session_transcript_path(state_dir, session_id)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise Gone(f"session {session_id} has no transcript file") from None
    turns, started_at = [], None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            continue
        if started_at is None and _finite(record.get("session_start_time")):
            started_at = record["session_start_time"]
        turn = {
            "text": record["text"],
            "words": record.get("words") if isinstance(record.get("words"), list) else [],
            "speaker": record.get("speaker") if isinstance(record.get("speaker"), str) else None,
            "late": record.get("late") is True,
        }
        if record.get("late") is True:
            turn["offset_ms"] = record.get("offset_ms")
        else:
            turn["turn_order"] = record.get("turn_order")
        turns.append(turn)
    turns.sort(key=_stream_position)
    return {
        "v": PAYLOAD_VERSION,
        "kind": SESSION,
        "id": session_id,
        "started_at": started_at,
        "text": " ".join(t["text"] for t in turns if t["text"]),
        "turns": turns,
        "summary": stored_summary(state_dir, spool, SESSION, session_id),
    }


def recording_payload(state_dir: Path, spool: Spool, recording_id: str) -> dict[str, Any]:
    """A field recording's pre-recorded transcript, as the service returned it, with its ids."""
    row = spool.get(recording_id)
    if row is None:
        raise Gone(f"recording {recording_id} is no longer in the spool")
    try:
        raw = spool.artifact_path(recording_id, "json").read_text(encoding="utf-8")
        transcript = json.loads(raw)
    except (OSError, ValueError):
        raise Gone(f"recording {recording_id} has no readable transcript") from None
    if not isinstance(transcript, dict):
        raise Gone(f"recording {recording_id} has no readable transcript")
    out: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "kind": RECORDING,
        "id": recording_id,
        "transcript_id": row.transcript_id,
        "origin": row.origin,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "duration_seconds": round(row.duration_seconds, 3),
    }
    for name in _RECORDING_FIELDS:
        out[name] = transcript.get(name)
    out["summary"] = stored_summary(state_dir, spool, RECORDING, recording_id)
    return out


def _stream_position(turn: dict[str, Any]) -> float:
    """Where a turn starts in the session's stream (its first word, else a late turn's
    offset); a turn without either keeps its place after the ones that have one."""
    words = turn["words"]
    if words and isinstance(words[0], dict) and _finite(words[0].get("start_ms")):
        return float(words[0]["start_ms"])
    if _finite(turn.get("offset_ms")):
        return float(turn["offset_ms"])
    return math.inf


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
