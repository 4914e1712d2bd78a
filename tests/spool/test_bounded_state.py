"""The spool's rows stay bounded, and what every status view and uploader pass reads is indexed."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np

from appliance.spool import Spool, SpoolParams
from appliance.spool import store as st

DAY = 86400.0
RATE = 16000


def params(tmp_path: Path, **kw: object) -> SpoolParams:
    base: dict[str, object] = dict(directory=tmp_path / "spool", min_free_bytes=0)
    base.update(kw)
    return SpoolParams(**base)  # type: ignore[arg-type]


def completed(spool: Spool, at: float, content: str | None = None) -> str:
    """A transcribed recording, completed at ``at``, with its transcript beside the audio."""
    writer = spool.open_recording("record", RATE)
    writer.write(np.zeros(1600, dtype=np.int16))
    rid = writer.close()
    spool.artifact_path(rid, "json").write_text('{"id": "t1"}')
    spool.store.transition(
        rid, st.READY, st.COMPLETED, completed_at=at, transcript_id="t1", content_hash=content
    )
    return rid


def test_forgotten_recordings_lose_row_and_folder_and_are_not_rebuilt(tmp_path: Path) -> None:
    spool = Spool(params(tmp_path, retention_days=1, history_days=30))
    old = completed(spool, at=1000.0, content="h-old")
    kept_audio = completed(spool, at=1000.0 + 29 * DAY)
    spool.store.remember_upload("h-old", "https://cdn/old")
    now = 1000.0 + 31 * DAY
    spool.housekeeping(now)
    assert spool.get(old) is None and not spool.recording_dir(old).exists()
    assert spool.get(kept_audio) is not None and spool.get(kept_audio).audio_deleted
    assert spool.store.upload_url_for("h-old") is None
    spool.close()
    reopened = Spool(params(tmp_path, retention_days=1, history_days=30))
    try:
        assert [r.id for r in reopened.list()] == [kept_audio]
    finally:
        reopened.close()


def test_a_recording_keeps_its_row_until_its_audio_is_gone_and_failed_ones_stay(
    tmp_path: Path,
) -> None:
    spool = Spool(params(tmp_path, retention_days=60, history_days=30))
    try:
        audio_kept = completed(spool, at=1000.0)
        writer = spool.open_recording("record", RATE)
        writer.write(np.zeros(1600, dtype=np.int16))
        failed = writer.close()
        spool.store.transition(failed, st.READY, st.FAILED, last_error="HTTP 400")
        assert spool.prune(now=1000.0 + 40 * DAY) == []
        assert spool.get(audio_kept) is not None and spool.get(failed) is not None
    finally:
        spool.close()


def test_history_without_an_age_limit_keeps_every_row(tmp_path: Path) -> None:
    spool = Spool(params(tmp_path, retention_days=1, history_days=None))
    try:
        rid = completed(spool, at=1000.0)
        spool.housekeeping(now=1000.0 + 3650 * DAY)
        assert spool.get(rid) is not None
    finally:
        spool.close()


def test_status_counts_only_recordings_still_in_the_spools_care(tmp_path: Path) -> None:
    spool = Spool(params(tmp_path))
    try:
        completed(spool, at=1000.0)
        writer = spool.open_recording("record", RATE)
        writer.write(np.zeros(1600, dtype=np.int16))
        ready = writer.close()
        assert spool.status()["states"] == {st.READY: 1}
        assert spool.status()["waiting"] == 1
        assert [r.id for r in spool.newest(st.OPEN_STATES, 5)] == [ready]
    finally:
        spool.close()


def test_every_query_of_the_status_view_and_the_uploader_reads_an_index(tmp_path: Path) -> None:
    spool = Spool(params(tmp_path, retention_days=1, history_days=30))
    try:
        for i in range(20):
            completed(spool, at=1000.0 + i, content=f"h{i}")
        statements: list[str] = []
        db: sqlite3.Connection = spool.store._db
        db.set_trace_callback(statements.append)
        try:
            spool.status()
            spool.newest(st.OPEN_STATES, 20)
            spool.store.all(st.PENDING_STATES)  # the uploader's pass
            spool.store.all((st.RECORDING,))  # recovery, every pass
            spool.store.transcript_for("h3")
            spool.store.submit_in_flight("h3", "other")
            spool.store.upload_url_for("h3")
            spool.store.completed_with_audio(before=2000.0)  # expiry
            spool.store.purged_before(2000.0, 10)  # forgetting
        finally:
            db.set_trace_callback(None)
        reads = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
        assert len(reads) == 9
        for sql in reads:
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
            full_scans = [step for step in plan if step.startswith("SCAN")]
            assert full_scans == [], (sql, plan)
    finally:
        spool.close()


def test_the_columns_a_write_may_set_are_the_rows_fields() -> None:
    fields = {f.name for f in dataclasses.fields(st.RecordingRow)}
    assert set(st.Columns.__annotations__) == fields
