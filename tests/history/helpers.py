"""A device's history for the tests: a live session's JSONL and a recording transcribed by
the emulator (upload, submit, poll, the API's SRT and VTT stored by the uploader)."""

from __future__ import annotations

import json
from pathlib import Path

from appliance.history.archive import Archive
from appliance.spool import Spool
from tests.spool.helpers import client_for, make_spool, record_digits
from tests.spool.test_uploader import fast_uploader

SESSION_ID = "0123456789abcdef"
SESSION_START = 1_700_000_000.0


def write_session(state_dir: Path, session_id: str = SESSION_ID) -> Path:
    """Two speakers' final turns, as ``live.TranscriptWriter`` writes them."""
    path = state_dir / "transcripts" / f"{session_id}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    turns = [
        ("One, two.", 1000, "A", ["One,", "two."]),
        ("Three.", 4000, "B", ["Three."]),
    ]
    with open(path, "w", encoding="utf-8") as f:
        for order, (text, start, speaker, words) in enumerate(turns):
            record = {
                "session_id": session_id,
                "turn_order": order,
                "text": text,
                "words": [
                    {
                        "text": w,
                        "start_ms": start + 400 * i,
                        "end_ms": start + 400 * i + 300,
                        "confidence": 0.9,
                    }
                    for i, w in enumerate(words)
                ],
                "time": SESSION_START + start / 1000,
                "session_start_time": SESSION_START,
                "server_session_id": "srv",
                "formatted": True,
                "speaker": speaker,
            }
            f.write(json.dumps(record) + "\n")
    return path


async def transcribed_recording(spool: Spool, emulator, digits: str = "4 5 6") -> str:
    """A field recording taken all the way to ``completed`` through the emulator."""
    rid = record_digits(spool, digits)
    async with client_for(emulator) as client:
        await fast_uploader(spool, client, cfg={"speaker_labels": True}).drain(timeout=30)
    return rid


async def device_history(tmp_path: Path, emulator) -> tuple[Archive, Spool, str]:
    """(archive, spool, recording id) of a device with one session and one recording."""
    state_dir = tmp_path / "state"
    write_session(state_dir)
    spool = make_spool(tmp_path)
    rid = await transcribed_recording(spool, emulator)
    return Archive(state_dir, lambda: spool), spool, rid
