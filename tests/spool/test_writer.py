"""The recording writer: valid WAV at every sync, crash recovery, ids that stay inside."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.spool import Spool, SpoolFull, SpoolParams
from appliance.spool import store as st
from appliance.spool.ids import InvalidId, check_recording_id, check_transcript_id, inside

RATE = 16000


def params(tmp_path: Path, **kw) -> SpoolParams:
    base = dict(directory=tmp_path / "spool", quota_bytes=50_000_000, min_free_bytes=0)
    base.update(kw)
    return SpoolParams(**base)


def ramp(n: int, start: int = 0) -> np.ndarray:
    return ((np.arange(start, start + n) % 20000) - 10000).astype(np.int16)


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def test_closed_recording_is_ready_with_every_sample_in_order(tmp_path):
    spool = Spool(params(tmp_path, segment_seconds=1.0))
    writer = spool.open_recording("record", RATE)
    for i in range(25):
        writer.write(ramp(1000, i * 1000))
    rid = writer.close()
    row = spool.get(rid)
    assert row.state == st.READY
    assert row.data_bytes == 25000 * 2
    assert row.content_hash.startswith("sha256:")
    segs = spool.segments(rid)
    assert len(segs) == 2  # 1 s segments at 16 kHz
    audio = np.concatenate([read_wav(p) for p in segs])
    np.testing.assert_array_equal(audio, ramp(25000))


def test_every_sync_leaves_a_valid_header(tmp_path):
    spool = Spool(params(tmp_path))
    writer = spool.open_recording("record", RATE)
    writer.write(ramp(4000))
    writer.sync()
    seg = spool.segments(writer.id)[0]
    np.testing.assert_array_equal(read_wav(seg), ramp(4000))
    writer.close()


def test_recovery_keeps_what_reached_the_disk_and_fixes_the_header(tmp_path):
    p = params(tmp_path)
    spool = Spool(p)
    writer = spool.open_recording("live-gap", RATE, session_id="sess-1", session_offset=32000)
    writer.write(ramp(8000))
    writer.sync()
    writer.write(ramp(3001, 8000))  # not synced: header still says 8000
    seg = spool.segments(writer.id)[0]
    with open(seg, "ab") as f:  # a torn half-sample, as a crash mid-write could leave
        f.write(b"\x01")
    rid = writer.id
    spool.open_writers.clear()  # simulate the process dying: nobody closes it
    spool.close()

    again = Spool(p)
    row = again.get(rid)
    assert row.state == st.READY
    assert row.session_id == "sess-1" and row.session_offset == 32000
    np.testing.assert_array_equal(read_wav(again.segments(rid)[0]), ramp(11001))


def test_second_owner_is_refused_but_a_reader_may_look(tmp_path):
    from appliance.spool import SpoolBusy

    p = params(tmp_path)
    owner = Spool(p)
    with pytest.raises(SpoolBusy):
        Spool(p)
    viewer = Spool(p, owner=False)
    assert viewer.list() == []
    owner.close()


def test_empty_recording_is_removed(tmp_path):
    spool = Spool(params(tmp_path))
    rid = spool.open_recording("record", RATE).close()
    assert spool.get(rid) is None


def test_quota_raises_spoolfull_and_keeps_earlier_audio(tmp_path):
    spool = Spool(params(tmp_path, quota_bytes=1_000_000))
    writer = spool.open_recording("record", RATE)
    written = 0
    with pytest.raises(SpoolFull):
        for _ in range(100):
            writer.write(ramp(16000, written))
            written += 16000
    assert spool.full_reason and "quota" in spool.full_reason
    rid = writer.close()
    audio = read_wav(spool.segments(rid)[0])
    np.testing.assert_array_equal(audio, ramp(written))


@pytest.mark.parametrize("bad", ["../../etc/passwd", "..", "", "a/b", "20260101T000000Z-zzzzzzzz"])
def test_outside_ids_are_refused(tmp_path, bad):
    spool = Spool(params(tmp_path))
    with pytest.raises(InvalidId):
        check_recording_id(bad)
    with pytest.raises(InvalidId):
        spool.get(bad)
    with pytest.raises(InvalidId):
        spool.recording_dir(bad)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 200, "id?x=1", "%2e%2e"])
def test_server_transcript_ids_are_checked(bad):
    with pytest.raises(InvalidId):
        check_transcript_id(bad)


def test_inside_refuses_escapes(tmp_path):
    with pytest.raises(InvalidId):
        inside(tmp_path, "..", "etc")
    os.symlink("/etc", tmp_path / "link")
    with pytest.raises(InvalidId):
        inside(tmp_path, "link", "passwd")


def test_free_space_floor_refuses_before_the_disk_is_full(tmp_path):
    s = os.statvfs(tmp_path)
    free = s.f_bavail * s.f_frsize
    spool = Spool(params(tmp_path, min_free_bytes=free + 1_000_000_000))
    with pytest.raises(SpoolFull, match="free-space floor"):
        spool.open_recording("record", RATE)
    assert spool.list() == []


def test_retention_deletes_only_transcribed_audio_after_its_time(tmp_path):
    spool = Spool(params(tmp_path, retention_days=1))
    w = spool.open_recording("record", RATE)
    w.write(ramp(1600))
    rid = w.close()
    assert spool.expire(now=10**10) == []  # not transcribed: kept whatever its age
    spool.store.transition(rid, st.READY, st.COMPLETED, completed_at=1000.0)
    assert spool.expire(now=1000.0 + 3600) == []  # transcribed, but within retention
    assert spool.expire(now=1000.0 + 86400) == [rid]
    assert spool.segments(rid) == [] and spool.get(rid).audio_deleted
