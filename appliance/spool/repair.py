"""Repairing the spool's state from its files: quarantine and rebuild.

The audio on disk is the truth; the database only says how far each
recording got. So a damaged database is renamed beside itself (never
deleted, a person may want it) and every recording folder without a row gets
one back from what its files show, conservatively:

* a stored ``transcript.json``: completed (or submitted, to fetch the missing
  subtitles again, when its id is usable);
* a submit marker (``submit.json``): submitting, so the uploader reconciles
  with the server's transcript list before it would ever submit again;
* audio and nothing else: ready to upload (an upload creates no transcript);
* nothing worth keeping: left alone, with no row.

Origin, rate, live session and offset come from ``recording.json`` (written
when the recording opened); where it is missing or unusable the origin is
recorded as ``record``. The lost-sample account is not on disk. Every rebuilt
row carries a note saying it was rebuilt.
The same step runs at every start of the owner, so a rebuild cut short by a
power cut simply continues.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.spool import store as st
from appliance.spool.ids import RECORDING_ID_RE, InvalidId, check_transcript_id
from appliance.spool.wavseg import (
    recover_segment,
    segment_data_bytes,
    segment_is_whole,
    segment_rate,
)

if TYPE_CHECKING:
    from appliance.spool.spool import Spool

log = logging.getLogger("appliance.spool")

QUARANTINE_INFIX = ".corrupt-"
# The rate a rebuilt row gets when no segment header names one (only its length reads wrong).
FALLBACK_RATE = 16000
REBUILT_NOTE = "rebuilt from the files on disk"
REBUILT_NOTE_NO_ORIGIN = "rebuilt from the files on disk; origin unknown"
# Longer session ids in recording.json are not ours (live session ids are UUID-like).
MAX_SESSION_ID = 128
_ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


def quarantine(path: Path, now: float | None = None) -> Path:
    """Rename the database (and its WAL files) beside itself; return the new name."""
    stamp = time.strftime(_ID_TIME_FORMAT, time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}{QUARANTINE_INFIX}{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{QUARANTINE_INFIX}{stamp}-{n}")
        n += 1
    for suffix in ("", *st.DB_SIDE_SUFFIXES):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    return target


def quarantined(path: Path) -> list[Path]:
    """Databases set aside beside ``path``, oldest first."""
    found = path.parent.glob(f"{path.name}{QUARANTINE_INFIX}*")
    return sorted(p for p in found if not p.name.endswith(st.DB_SIDE_SUFFIXES))


def adopt_orphans(spool: Spool) -> list[str]:
    """Give every recording folder without a row one, from its files; return their ids.

    A folder that cannot be read is logged and left for the next start.
    """
    known = spool.store.ids()
    adopted = []
    for folder in sorted(spool.audio_root.iterdir()):
        rid = folder.name
        if rid in known or not RECORDING_ID_RE.fullmatch(rid) or not folder.is_dir():
            continue
        try:
            fields = row_from_files(spool, rid)
        except OSError as exc:
            log.error("cannot rebuild recording %s from its files: %s", rid, exc)
            continue
        if fields is None:
            continue
        if spool.store.insert_found(**fields):
            log.warning(
                "recording %s rebuilt from its files: %s",
                rid,
                fields["state"],
                extra={"RECORDING_ID": rid},
            )
            adopted.append(rid)
    return adopted


def row_from_files(spool: Spool, recording_id: str) -> dict[str, Any] | None:
    """The row's columns as the files of ``recording_id`` show them (None: nothing to keep)."""
    meta = _meta(_read_json(spool.meta_path(recording_id)))
    rate, data_bytes = _audio(spool, recording_id, meta.get("rate"))
    transcript = _read_json(spool.artifact_path(recording_id, "json"))
    upload_url = spool.submitted_upload(recording_id)
    created = _id_time(recording_id)
    fields: dict[str, Any] = {
        "id": recording_id,
        "origin": meta.get("origin", "record"),
        "rate": rate,
        "session_id": meta.get("session_id"),
        "session_offset": meta.get("session_offset"),
        "started_at": meta.get("started_at", created),
        "created_at": created,
        "updated_at": time.time(),
        "data_bytes": data_bytes,
        "audio_deleted": int(data_bytes == 0),
        "upload_url": upload_url,
        "last_error": REBUILT_NOTE if "origin" in meta else REBUILT_NOTE_NO_ORIGIN,
    }
    if transcript is not None:
        tid = _usable_id(transcript.get("id"))
        subtitles = all(spool.artifact_path(recording_id, s).exists() for s in ("srt", "vtt"))
        if tid is not None and not subtitles:
            return {**fields, "state": st.SUBMITTED, "transcript_id": tid}
        stored = spool.artifact_path(recording_id, "json").stat().st_mtime
        return {**fields, "state": st.COMPLETED, "transcript_id": tid, "completed_at": stored}
    if data_bytes == 0:
        return None
    if upload_url is not None:
        return {**fields, "state": st.SUBMITTING}
    return {**fields, "state": st.READY}


def _meta(data: dict[str, Any] | None) -> dict[str, Any]:
    """The usable fields of ``recording.json`` (anything odd is dropped, not trusted)."""
    data = data or {}
    out: dict[str, Any] = {}
    if data.get("origin") in st.ORIGINS:
        out["origin"] = data["origin"]
    if _is_int(data.get("rate")) and _rate_ok(data["rate"]):
        out["rate"] = data["rate"]
    session_id = data.get("session_id")
    if isinstance(session_id, str) and 0 < len(session_id) <= MAX_SESSION_ID:
        out["session_id"] = session_id
    if _is_int(data.get("session_offset")) and data["session_offset"] >= 0:
        out["session_offset"] = data["session_offset"]
    started = data.get("started_at")
    if (
        isinstance(started, int | float)
        and not isinstance(started, bool)
        and math.isfinite(started)
        and started > 0
    ):
        out["started_at"] = float(started)
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rate_ok(rate: int) -> bool:
    return 1000 <= rate <= 384000


def _audio(spool: Spool, recording_id: str, known_rate: int | None) -> tuple[int, int]:
    """(rate, data bytes) of the recording's segments, repairing any a crash left torn."""
    segments = spool.segments(recording_id)
    rates = [r for r in map(segment_rate, segments) if r is not None and _rate_ok(r)]
    rate = known_rate or (rates[0] if rates else FALLBACK_RATE)
    total = 0
    for seg in segments:
        if not segment_is_whole(seg):
            recover_segment(seg, rate)
        total += segment_data_bytes(seg)
    return rate, total


def _read_json(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    return None


def _usable_id(value: object) -> str | None:
    try:
        return check_transcript_id(value)
    except InvalidId:
        return None


def _id_time(recording_id: str) -> float:
    return float(calendar.timegm(time.strptime(recording_id[:16], _ID_TIME_FORMAT)))
