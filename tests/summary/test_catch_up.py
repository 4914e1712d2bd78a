"""A live session whose end was never seen (a crash) is summarised at the next start, once."""

from __future__ import annotations

import os

from appliance.summary import jobs as sj
from appliance.summary.stored import read_summary
from tests.history.helpers import SESSION_ID, write_session

from .helpers import close, completions, make_worker


def _written_at(path, when: float) -> None:
    os.utime(path, (when, when))


async def test_a_transcript_left_without_a_summary_job_is_summarised_once_at_start(
    emulator, spool, tmp_path
):
    state = tmp_path / "state"
    before_the_crash = make_worker(emulator, spool, state)  # summaries were on: queue opened
    opened_at = before_the_crash.jobs.opened_at
    await close(before_the_crash)
    # The session's transcript is on disk; the process died before its "ended" was queued.
    transcript = write_session(state)

    started = make_worker(emulator, spool, state)
    _written_at(transcript, (opened_at + started.started_at) / 2)
    try:
        await started.drain(timeout=10)
        job = started.jobs.get("session", SESSION_ID)
    finally:
        await close(started)
    assert job is not None and job.state == sj.COMPLETED
    stored = read_summary(state, spool.root, "session", SESSION_ID)
    assert stored is not None and stored.text.startswith("Summary:\n")
    assert completions(emulator) == 1

    again = make_worker(emulator, spool, state)  # the next start finds it made: not again
    try:
        assert again.catch_up_sessions() == []
        await again.drain(timeout=10)
    finally:
        await close(again)
    assert completions(emulator) == 1


async def test_only_sessions_written_between_summaries_turned_on_and_this_start_are_caught_up(
    emulator, spool, tmp_path
):
    state = tmp_path / "state"
    older = write_session(state, "aa01")  # before summaries were ever turned on
    _written_at(older, 1_000_000.0)
    worker = make_worker(emulator, spool, state)
    running = write_session(state, "bb02")  # this process's own session: its end queues it
    _written_at(running, worker.started_at + 1)
    write_session(state, "not-ours")  # a name that is not a session id names nothing
    try:
        assert worker.catch_up_sessions() == []
    finally:
        await close(worker)
    assert worker.jobs.opened_at > 1_000_000.0
    assert completions(emulator) == 0
