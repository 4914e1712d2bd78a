"""A damaged spool: the database set aside and rebuilt from the files, or the spool
reported unavailable; never a recording lost, never a submit repeated blindly."""

from __future__ import annotations

import json

import pytest

from appliance.spool import Spool, SpoolParams, SpoolUnavailable
from appliance.spool import store as st
from appliance.spool.repair import REBUILT_NOTE, REBUILT_NOTE_NO_ORIGIN, quarantined
from appliance.spool.store import find_damage
from appliance.spool.uploader import Uploader

from .helpers import (
    RATE,
    client_for,
    corrupt_database,
    make_spool,
    read_only,
    record_digits,
    upload_config,
)


def params(tmp_path) -> SpoolParams:
    return SpoolParams(tmp_path / "spool", quota_bytes=50_000_000, min_free_bytes=0)


@pytest.mark.parametrize("how", ["garbage", "pages"])
def test_damaged_database_is_set_aside_and_rebuilt_from_the_audio(tmp_path, how):
    spool = make_spool(tmp_path)
    ids = [record_digits(spool, "1 2"), record_digits(spool, "3")]
    spool.close()
    damaged = corrupt_database(tmp_path / "spool", how)
    assert find_damage(tmp_path / "spool" / "spool.sqlite3") is not None

    spool = Spool(params(tmp_path))
    (kept,) = quarantined(tmp_path / "spool" / "spool.sqlite3")
    assert kept.read_bytes() == damaged  # renamed beside it, never deleted
    assert kept.name.startswith("spool.sqlite3.corrupt-")
    assert spool.notice and kept.name in spool.notice and "2 recording(s)" in spool.notice
    rows = {r.id: r for r in spool.list()}
    assert sorted(rows) == sorted(ids)
    for rid in ids:
        assert rows[rid].state == st.READY and rows[rid].rate == RATE
        assert rows[rid].data_bytes == sum(seg.stat().st_size - 44 for seg in spool.segments(rid))
        assert rows[rid].last_error == REBUILT_NOTE
    assert spool.status()["waiting"] == 2
    spool.close()
    assert find_damage(tmp_path / "spool" / "spool.sqlite3") is None


def _write(path, data) -> None:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)


# What one recording folder holds -> the state its rebuilt row must have.
REBUILD_ROWS = [
    pytest.param({}, st.READY, id="audio only: ready to upload"),
    pytest.param({"submit": "U"}, st.SUBMITTING, id="submit marker: reconcile first"),
    pytest.param(
        {"json": {"id": "t-1"}, "srt": "1\n", "vtt": "WEBVTT"}, st.COMPLETED, id="transcript"
    ),
    pytest.param({"json": {"id": "t-1"}}, st.SUBMITTED, id="transcript without subtitles"),
    pytest.param({"json": {"id": "../x"}}, st.COMPLETED, id="transcript with an odd id"),
    pytest.param({"json": {"id": "t-1"}, "no_audio": True}, st.SUBMITTED, id="audio deleted"),
    pytest.param({"torn": True}, st.READY, id="torn last segment: whole samples kept"),
    pytest.param({"no_audio": True}, None, id="nothing to keep: no row"),
]


@pytest.mark.parametrize(("files", "state"), REBUILD_ROWS)
def test_rebuilt_row_follows_the_files(tmp_path, files, state):
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "4 5")
    folder = spool.recording_dir(rid)
    if "submit" in files:
        _write(spool.submit_marker_path(rid), {"upload_url": "https://x/upload/1"})
    for suffix in ("json", "srt", "vtt"):
        if suffix in files:
            _write(spool.artifact_path(rid, suffix), files[suffix])
    if files.get("no_audio"):
        for seg in spool.segments(rid):
            seg.unlink()
    if files.get("torn"):
        with open(spool.segments(rid)[-1], "ab") as f:
            f.write(b"\x01\x02\x03")  # a half sample past a stale header
    spool.close()
    corrupt_database(tmp_path / "spool")

    spool = Spool(params(tmp_path))
    row = spool.get(rid)
    assert folder.is_dir()  # never removed
    if state is None:
        assert row is None
        return
    assert row.state == state
    if state == st.SUBMITTING:
        assert row.upload_url == "https://x/upload/1"
    if state in (st.SUBMITTED, st.COMPLETED) and files["json"]["id"] == "t-1":
        assert row.transcript_id == "t-1"
    assert row.audio_deleted == bool(files.get("no_audio"))
    for seg in spool.segments(rid):
        assert (seg.stat().st_size - 44) % 2 == 0 and seg.stat().st_size - 44 == (
            int.from_bytes(seg.read_bytes()[40:44], "little")
        )


def test_read_only_spool_is_unavailable_and_keeps_its_files(tmp_path):
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "6")
    spool.close()
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "spool").rglob("*"))
    with read_only(tmp_path / "spool"):
        with pytest.raises(SpoolUnavailable) as info:
            Spool(params(tmp_path))
        assert "Read-only file system" in str(info.value) or "denied" in str(info.value)
        with pytest.raises(SpoolUnavailable):
            Spool(params(tmp_path), owner=False)
        assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "spool").rglob("*")) == before
    assert Spool(params(tmp_path)).get(rid).state == st.READY


def test_viewer_reports_a_damaged_database_and_leaves_it_alone(tmp_path):
    make_spool(tmp_path).close()
    damaged = corrupt_database(tmp_path / "spool")
    with pytest.raises(SpoolUnavailable, match="sets it aside"):
        Spool(params(tmp_path), owner=False)
    assert (tmp_path / "spool" / "spool.sqlite3").read_bytes() == damaged
    assert quarantined(tmp_path / "spool" / "spool.sqlite3") == []


def test_rebuild_cut_short_continues_at_the_next_start(tmp_path):
    """Rows are rebuilt one by one: whatever a power cut left without a row gets one later."""
    spool = make_spool(tmp_path)
    ids = [record_digits(spool, "7"), record_digits(spool, "8")]
    spool.store.delete(ids[1])  # as if the rebuild stopped after the first recording
    spool.close()
    spool = Spool(params(tmp_path))
    assert {r.id for r in spool.list()} == set(ids)
    assert spool.notice is None  # nothing was damaged


async def test_rebuilt_submit_is_reconciled_not_submitted_again(tmp_path, emulator):
    """The database is lost after the submit was sent: the marker on disk makes the
    rebuilt row reconcile with the server's list, so the audio is paid for once."""
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "9 1")
    async with client_for(emulator) as client:
        await Uploader(spool, client, upload_config(), retry_base=0.05).drain(timeout=30)
    first = spool.get(rid)
    assert first.state == st.COMPLETED
    for suffix in ("json", "srt", "vtt"):  # a power cut before the transcript was stored
        spool.artifact_path(rid, suffix).unlink()
    spool.close()
    corrupt_database(tmp_path / "spool")

    spool = Spool(params(tmp_path))
    assert spool.get(rid).state == st.SUBMITTING
    async with client_for(emulator) as client:
        await Uploader(spool, client, upload_config(), retry_base=0.05).drain(timeout=30)
    row = spool.get(rid)
    assert row.state == st.COMPLETED and row.transcript_id == first.transcript_id
    assert emulator.state.submissions_for_upload(first.upload_url) == 1
    assert json.loads(spool.artifact_path(rid, "json").read_text())["text"] == "Nine one."


def test_quarantine_moves_the_wal_files_too(tmp_path):
    """The old WAL goes with the database it belongs to: replayed into the fresh one it
    would damage that too."""
    spool = make_spool(tmp_path)
    record_digits(spool, "2")
    spool.close()
    corrupt_database(tmp_path / "spool")
    db = tmp_path / "spool" / "spool.sqlite3"
    db.with_name(db.name + "-wal").write_bytes(b"stale wal")
    Spool(params(tmp_path)).close()
    (kept,) = quarantined(db)
    assert kept.with_name(kept.name + "-wal").read_bytes() == b"stale wal"
    assert find_damage(db) is None


# recording.json as found -> what the rebuilt row says of origin, session and offset.
META_ROWS = [
    pytest.param(None, ("live-gap", "sess-1", 4800, REBUILT_NOTE), id="as written"),
    pytest.param("{not json", ("record", None, None, REBUILT_NOTE_NO_ORIGIN), id="unreadable"),
    pytest.param(
        {"origin": "../../x", "session_id": 7, "session_offset": -1, "rate": 1e9},
        ("record", None, None, REBUILT_NOTE_NO_ORIGIN),
        id="odd values dropped",
    ),
    pytest.param("", ("record", None, None, REBUILT_NOTE_NO_ORIGIN), id="missing"),
]


@pytest.mark.parametrize(("meta", "expected"), META_ROWS)
def test_rebuilt_row_keeps_what_recording_json_says(tmp_path, meta, expected):
    """A live session's gap stays joined to its session after a rebuild."""
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "1", origin="live-gap", session_id="sess-1", session_offset=4800)
    path = spool.meta_path(rid)
    if meta == "":
        path.unlink()
    elif meta is not None:
        _write(path, meta)
    spool.close()
    corrupt_database(tmp_path / "spool")
    row = Spool(params(tmp_path)).get(rid)
    assert (row.origin, row.session_id, row.session_offset, row.last_error) == expected
    assert row.rate == RATE and row.state == st.READY
