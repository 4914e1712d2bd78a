"""A live session's spooled audio, transcribed later, joins the session at its offset."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import events as ev
from appliance.late import LateTranscripts, late_turn, session_transcript_path
from tests.events import collect


@dataclass
class Row:
    id: str = "rec1"
    origin: str = "live-gap"
    rate: int = 16_000
    session_id: str | None = "abc123"
    session_offset: int | None = 48_000  # three seconds into the session
    transcript_id: str | None = "t-1"


TRANSCRIPT = {
    "text": "5 6",
    "words": [
        {"text": "5", "start": 100, "end": 300, "confidence": 0.9},
        {"text": "6", "start": 700, "end": 900, "confidence": 0.8},
        {"text": "bad", "start": float("nan"), "end": 1},
    ],
}


def test_word_times_move_to_the_sessions_stream_time() -> None:
    turn = late_turn("abc123", "rec1", "t-1", 48_000, 16_000, TRANSCRIPT)
    assert turn.offset_ms == 3000
    assert [(w["text"], w["start_ms"], w["end_ms"]) for w in turn.words] == [
        ("5", 3100, 3300),
        ("6", 3700, 3900),
    ]


def test_a_completed_gap_is_appended_to_the_session_file_marked_late(tmp_path: Path) -> None:
    bus = ev.EventBus()
    seen = collect(bus, ev.TurnFinal)
    path = session_transcript_path(tmp_path, "abc123")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"session_id": "abc123", "turn_order": 0, "text": "1 2"}) + "\n")
    LateTranscripts(tmp_path, bus)(Row(), TRANSCRIPT)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r.get("late", False) for r in records] == [False, True]
    assert records[1]["text"] == "5 6" and records[1]["offset_ms"] == 3000
    (event,) = seen
    assert event.late is True and event.text == "5 6" and event.turn_order is None


def test_a_new_session_file_is_private(tmp_path: Path) -> None:
    LateTranscripts(tmp_path)(Row(), TRANSCRIPT)
    path = session_transcript_path(tmp_path, "abc123")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "row",
    [Row(origin="record"), Row(session_id=None), Row(session_offset=None)],
    ids=["a-field-recording", "no-session", "no-offset"],
)
def test_other_recordings_are_left_alone(tmp_path: Path, row: Row) -> None:
    assert LateTranscripts(tmp_path)(row, TRANSCRIPT) is None
    assert not (tmp_path / "transcripts").exists()


@pytest.mark.parametrize("session_id", ["../../etc/passwd", "ABC", "a/b", "", "x" * 65])
def test_a_session_id_from_the_database_never_escapes_the_transcripts_dir(
    tmp_path: Path, session_id: str
) -> None:
    with pytest.raises(ValueError):
        session_transcript_path(tmp_path, session_id)
    assert LateTranscripts(tmp_path)(Row(session_id=session_id), TRANSCRIPT) is None


def test_joining_the_same_recording_twice_writes_it_once(tmp_path: Path) -> None:
    """A crash after joining, before the uploader's state changed, joins it again."""
    late = LateTranscripts(tmp_path)
    assert late(Row(), TRANSCRIPT) is not None
    assert late(Row(), TRANSCRIPT) is None
    path = session_transcript_path(tmp_path, "abc123")
    assert len(path.read_text().splitlines()) == 1
