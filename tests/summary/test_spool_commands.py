"""``appliance spool list|retry`` show the summaries and let a person ask again for a failed one."""

from __future__ import annotations

import sqlite3

import pytest

from appliance.cli import main
from appliance.summary import jobs as sj
from appliance.summary.stored import read_summary
from tests.history.helpers import SESSION_ID, write_session

from .helpers import close, completions, make_worker

UNKNOWN = f"{sj.UNKNOWN_OUTCOME}: the process stopped while the gateway was asked"


@pytest.fixture
def config_file(tmp_path, emulator, monkeypatch):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", emulator.api_key)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"spool:\n  directory: {tmp_path / 'spool'}\n  min_free_bytes: 0\n"
        f"endpoints:\n  base_url: {emulator.http_url}\n"
    )
    return path


def _failed(jobs: sj.SummaryJobs, source, source_id: str, reason: str, attempts: int = 1) -> None:
    jobs.add(source, source_id)
    job = jobs.get(source, source_id)
    jobs.move(job, sj.PENDING, sj.FAILED, attempts=attempts, last_error=reason)


def test_spool_list_shows_each_summary_with_its_state_attempts_and_last_error(
    spool, config_file, capsys
):
    jobs = sj.SummaryJobs(spool.store.path)
    try:
        _failed(jobs, "session", "ab12", UNKNOWN)
        _failed(jobs, "session", "cd34", "gave up after 3 attempts: HTTP 503", attempts=3)
    finally:
        jobs.close()
    assert main(["spool", "list", "-c", str(config_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SUMMARY", "ID", "STATE", "AGE", "TRIES", "NOTE"]
    by_id = {line.split()[1]: line for line in lines[1:3]}
    assert by_id["ab12"].split()[:3] == ["session", "ab12", "failed"]
    assert by_id["ab12"].split()[4] == "1" and sj.UNKNOWN_OUTCOME in by_id["ab12"]
    assert by_id["cd34"].split()[4] == "3" and "HTTP 503" in by_id["cd34"]
    assert "summaries: 0 pending, 0 requesting, 0 completed, 2 failed, 0 skipped" in lines


async def test_retry_asks_again_for_an_unknown_outcome_and_says_it_may_charge_twice(
    emulator, spool, config_file, tmp_path, capsys
):
    state = tmp_path / "state"
    write_session(state)
    worker = make_worker(emulator, spool, state)
    try:
        _failed(worker.jobs, "session", SESSION_ID, UNKNOWN)
        assert main(["spool", "retry", SESSION_ID, "-c", str(config_file)]) == 0
        out = capsys.readouterr().out
        assert "may charge twice" in out and f"session {SESSION_ID} queued again" in out
        assert worker.jobs.get("session", SESSION_ID).state == sj.PENDING
        await worker.drain(timeout=10)  # the daemon's worker takes it up
    finally:
        await close(worker)
    assert read_summary(state, spool.root, "session", SESSION_ID) is not None
    assert completions(emulator) == 1
    assert main(["spool", "retry", SESSION_ID, "-c", str(config_file)]) == 1  # made: not again
    assert "its summary is completed" in capsys.readouterr().err


def test_retry_all_asks_again_for_failed_summaries_but_an_unknown_outcome_only_by_its_id(
    spool, config_file, capsys
):
    jobs = sj.SummaryJobs(spool.store.path)
    try:
        _failed(jobs, "session", "ab12", UNKNOWN)
        _failed(jobs, "session", "cd34", "gave up after 3 attempts: HTTP 503", attempts=3)
        assert main(["spool", "retry", "--all", "-c", str(config_file)]) == 0
        assert jobs.get("session", "cd34").state == sj.PENDING
        assert jobs.get("session", "ab12").state == sj.FAILED
    finally:
        jobs.close()
    out = capsys.readouterr().out
    assert "1 failed summary(ies) queued again" in out
    assert "'appliance spool retry ab12' asks again" in out


@pytest.mark.parametrize("bad", ["../../etc/passwd", "AB12", "x" * 65, "/tmp/ab12"])
def test_retry_refuses_an_id_that_is_not_a_session_or_recording_id(spool, config_file, capsys, bad):
    assert main(["spool", "retry", bad, "-c", str(config_file)]) == 2
    assert "not a session or recording id" in capsys.readouterr().err


def test_listing_a_spool_without_summaries_creates_no_summary_queue(spool, config_file, capsys):
    assert main(["spool", "list", "-c", str(config_file)]) == 0
    with sqlite3.connect(spool.store.path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "summaries" not in tables and "summary_queue" not in tables


def test_retry_of_a_transcribed_recording_asks_again_for_its_failed_summary(
    spool, config_file, capsys
):
    from appliance.spool import store as st
    from tests.spool.helpers import record_digits

    rid = record_digits(spool, "1")
    spool.store.transition(rid, st.READY, st.COMPLETED, completed_at=1.0)
    jobs = sj.SummaryJobs(spool.store.path)
    try:
        _failed(jobs, "recording", rid, "HTTP 400: max_tokens out of range")
        assert main(["spool", "retry", rid, "-c", str(config_file)]) == 0
        assert jobs.get("recording", rid).state == sj.PENDING
    finally:
        jobs.close()
    assert spool.get(rid).state == st.COMPLETED
    out = capsys.readouterr().out
    assert f"the summary of recording {rid} queued again" in out and "twice" not in out
