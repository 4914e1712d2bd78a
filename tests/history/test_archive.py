"""The archive: what it lists, what it reads, and that no id from outside escapes."""

from __future__ import annotations

import pytest

from appliance.history.archive import COMPLETE, IN_PROGRESS, WAITING, Archive, NotFound, parse_id
from appliance.spool import store as st
from appliance.spool.ids import InvalidId
from tests.spool.helpers import make_spool, record_digits

from .helpers import SESSION_ID, device_history, write_session

HOSTILE_IDS = [
    "../etc/passwd",
    "..",
    "/etc/passwd",
    "0123abcd/../../x",
    "0123abcd%2F..",
    "20240101T000000Z-0000abcd/../x",
    "ABCDEF",  # not ours: session ids are lower-case hex
    "",
    "a" * 65,
    "0123\x00",
]


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_an_id_that_is_not_ours_is_refused_before_any_file_is_named(value, tmp_path):
    (tmp_path / "etc").mkdir()
    archive = Archive(tmp_path / "state", lambda: None)
    with pytest.raises(InvalidId):
        parse_id(value)
    for read in (archive.transcript, archive.audio, lambda v: archive.export(v, "txt")):
        with pytest.raises(InvalidId):
            read(value)


def test_ids_of_ours_name_their_kind():
    assert parse_id("0123abcd") == ("session", "0123abcd")
    assert parse_id("20240101T000000Z-0000abcd") == ("recording", "20240101T000000Z-0000abcd")


def test_an_unknown_well_formed_id_is_not_found(tmp_path):
    archive = Archive(tmp_path, lambda: make_spool(tmp_path))
    with pytest.raises(NotFound):
        archive.transcript("0123abcd")
    with pytest.raises(NotFound):
        archive.transcript("20240101T000000Z-0000abcd")


async def test_sessions_and_recordings_are_listed_newest_first(tmp_path, emulator):
    archive, _spool, rid = await device_history(tmp_path, emulator)
    entries = archive.entries()
    assert [(e.kind, e.id) for e in entries] == [("recording", rid), ("session", SESSION_ID)]
    recording, session = entries
    assert (recording.state, recording.audio) == (st.COMPLETED, True)
    assert (session.state, session.started_at, session.audio) == (COMPLETE, 1_700_000_000.0, False)
    assert [e.id for e in archive.entries(limit=1)] == [rid]


async def test_a_recordings_speakers_come_from_the_apis_utterances(tmp_path, emulator):
    archive, _spool, rid = await device_history(tmp_path, emulator)
    t = archive.transcript(rid)
    assert t.text == "Four five six."
    assert t.speakers == ("A",)


async def test_a_recordings_subtitles_are_the_apis_own(tmp_path, emulator):
    archive, spool, rid = await device_history(tmp_path, emulator)
    for fmt in ("srt", "vtt"):
        name, text = archive.export(rid, fmt)
        assert name == f"recording-{rid}.{fmt}"
        assert text == spool.artifact_path(rid, fmt).read_text()


async def test_a_recordings_audio_is_its_whole_wav_until_the_spool_deletes_it(tmp_path, emulator):
    archive, spool, rid = await device_history(tmp_path, emulator)
    audio = archive.audio(rid)
    body = b"".join(audio.chunks)
    assert len(body) == audio.size and body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    spool.delete_audio(rid)
    with pytest.raises(NotFound):
        archive.audio(rid)
    assert archive.transcript(rid).text == "Four five six."  # the transcript stays


def test_a_live_session_has_no_audio_to_play(tmp_path):
    write_session(tmp_path)
    with pytest.raises(NotFound):
        Archive(tmp_path, lambda: None).audio(SESSION_ID)


def test_a_session_with_spooled_gaps_waits_for_them_and_the_running_one_is_in_progress(
    tmp_path,
):
    state_dir = tmp_path / "state"
    write_session(state_dir)
    spool = make_spool(tmp_path)
    gap = record_digits(spool, "1", origin="live-gap", session_id=SESSION_ID, session_offset=0)
    archive = Archive(state_dir, lambda: spool)
    assert [(e.kind, e.state) for e in archive.entries()] == [("session", WAITING)]
    assert archive.transcript(SESSION_ID, live=SESSION_ID).state == IN_PROGRESS
    assert archive.entry(gap).origin == "live-gap"  # not listed, still found by its id


def test_a_summary_is_read_through_the_seam_and_its_failure_is_no_summary(tmp_path):
    write_session(tmp_path)
    asked = []

    def summaries(kind, item_id):
        asked.append((kind, item_id))
        return {"summary": "Counted to three.", "action_items": ["Count on"]}

    t = Archive(tmp_path, lambda: None, summaries=summaries).transcript(SESSION_ID)
    assert asked == [("session", SESSION_ID)]
    assert (t.summary.text, t.summary.action_items) == ("Counted to three.", ("Count on",))

    def broken(kind, item_id):
        raise RuntimeError("store down")

    assert Archive(tmp_path, lambda: None, summaries=broken).transcript(SESSION_ID).summary is None
