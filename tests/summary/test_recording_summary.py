"""A field recording's summary: made after its transcript, stored beside it, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from appliance import events as ev
from appliance.spool import store as st
from appliance.spool.uploader import Uploader
from appliance.summary import jobs as sj
from appliance.summary.stored import StoredSummary, read_summary
from tests.events import collect
from tests.spool.helpers import client_for, record_digits, upload_config

from .helpers import CHAT, close, completions, make_worker


def waiting_after(worker, rid: str, attempts: int) -> bool:
    job = worker.jobs.get("recording", rid)
    return job is not None and job.state == sj.PENDING and job.attempts >= attempts


async def until(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "waited too long"
        await asyncio.sleep(0.01)


async def transcribe(emulator, spool, worker) -> str:
    """Record "12 34", run the uploader with the worker's hook until it is transcribed."""
    rid = record_digits(spool, "12 34")
    async with client_for(emulator) as client:
        uploader = Uploader(spool, client, upload_config(), on_transcript=worker.queue_after(None))
        await uploader.drain(timeout=30)
    assert spool.store.get(rid).state == st.COMPLETED
    return rid


async def test_a_transcribed_recording_gets_a_summary_beside_its_transcript(
    emulator, spool, tmp_path
):
    bus = ev.EventBus()
    seen = collect(bus, ev.SummaryStored)
    worker = make_worker(emulator, spool, tmp_path / "state", bus)
    try:
        rid = await transcribe(emulator, spool, worker)
        await worker.drain(timeout=20)
    finally:
        await close(worker)
    stored = read_summary(tmp_path / "state", spool.root, "recording", rid)
    assert stored is not None
    assert stored.text == "Summary:\n- 1234\n\nAction items:\n- none"
    assert stored.model == "claude-haiku-4-5-20251001" and not stored.truncated
    assert (spool.recording_dir(rid) / "summary.json").stat().st_mode & 0o777 == 0o600
    assert [(e.source, e.source_id, e.text) for e in seen] == [("recording", rid, stored.text)]
    request = emulator.state.chat_completions[0]
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][1] == {"role": "user", "content": "One two three four."}


async def test_a_failing_gateway_is_asked_again_later_and_the_summary_is_made_once(
    emulator, spool, tmp_path
):
    emulator.fail_http(503, count=1000, path_prefix=CHAT)
    first = make_worker(emulator, spool, tmp_path / "state")
    try:
        rid = await transcribe(emulator, spool, first)
        running = asyncio.create_task(first.run())
        # The gateway keeps failing: the summary waits between attempts, still pending.
        await until(lambda: waiting_after(first, rid, attempts=2))
        running.cancel()  # the daemon stops while it waits (not while it asks)
        with contextlib.suppress(asyncio.CancelledError):
            await running
    finally:
        await close(first)
    refused = sum(1 for _m, p, s in emulator.state.http_requests if p == CHAT and s == 503)
    assert refused >= 2  # retried with backoff, not given up
    assert completions(emulator) == 0
    emulator.reset_faults()

    second = make_worker(emulator, spool, tmp_path / "state")  # the daemon restarted
    try:
        row = second.jobs.get("recording", rid)
        assert row is not None and row.state == sj.PENDING and row.attempts == refused
        await second.drain(timeout=20)
        assert second.jobs.get("recording", rid).state == sj.COMPLETED
    finally:
        await close(second)
    third = make_worker(emulator, spool, tmp_path / "state")  # and again: nothing to do
    try:
        third.jobs.add("recording", rid)  # a transcript hook running twice adds nothing
        await third.drain(timeout=5)
    finally:
        await close(third)
    assert completions(emulator) == 1
    assert read_summary(tmp_path / "state", spool.root, "recording", rid) is not None
    assert emulator.state.violations_of("retry_too_soon", "llm") == []
    assert emulator.state.violations_of("identical_retry_delays", "llm") == []


async def test_an_answer_never_seen_is_not_asked_for_again_until_a_person_retries(
    emulator, spool, tmp_path
):
    worker = make_worker(emulator, spool, tmp_path / "state")
    try:
        rid = await transcribe(emulator, spool, worker)
        job = worker.jobs.get("recording", rid)
        # A process that died between sending the request and storing its answer.
        assert worker.jobs.move(job, sj.PENDING, sj.REQUESTING)
        await worker.drain(timeout=5)
        failed = worker.jobs.get("recording", rid)
        assert failed.state == sj.FAILED
        assert failed.last_error.startswith(sj.UNKNOWN_OUTCOME)
        assert completions(emulator) == 0
        assert worker.jobs.retry("recording", rid)
        await worker.drain(timeout=20)
    finally:
        await close(worker)
    assert completions(emulator) == 1
    assert read_summary(tmp_path / "state", spool.root, "recording", rid) is not None


async def test_a_summary_stored_before_a_crash_is_never_asked_for_again(emulator, spool, tmp_path):
    worker = make_worker(emulator, spool, tmp_path / "state")
    try:
        rid = await transcribe(emulator, spool, worker)
        job = worker.jobs.get("recording", rid)
        worker.jobs.move(job, sj.PENDING, sj.REQUESTING)
        kept = StoredSummary("recording", rid, "gpt-4.1", "- 1234", False, 1.0)
        worker.paths.store(kept)  # stored, then the power went before the row said so
        await worker.drain(timeout=5)
        assert worker.jobs.get("recording", rid).state == sj.COMPLETED
    finally:
        await close(worker)
    assert completions(emulator) == 0
    assert read_summary(tmp_path / "state", spool.root, "recording", rid) == kept


async def test_a_refused_key_fails_at_once_without_retrying(emulator, spool, tmp_path):
    worker = make_worker(emulator, spool, tmp_path / "state", key="not-the-key")
    try:
        rid = await transcribe(emulator, spool, worker)
        await worker.drain(timeout=5)
        failed = worker.jobs.get("recording", rid)
    finally:
        await close(worker)
    assert failed.state == sj.FAILED and "401" in failed.last_error
    assert "not-the-key" not in json.dumps(failed.last_error)
    assert sum(1 for _m, p, _s in emulator.state.http_requests if p == CHAT) == 1


async def test_only_field_recordings_are_summarised_on_their_own(emulator, spool, tmp_path):
    worker = make_worker(emulator, spool, tmp_path / "state")
    try:
        record_digits(spool, "5", origin="live-gap", session_id="ab12", session_offset=0)
        async with client_for(emulator) as client:
            uploader = Uploader(
                spool, client, upload_config(), on_transcript=worker.queue_after(None)
            )
            await uploader.drain(timeout=30)
        assert worker.jobs.in_states(*sj.STATES) == []
    finally:
        await close(worker)
