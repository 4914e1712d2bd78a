"""The real daemon, started after a crash that lost a session's summary, makes it once."""

from __future__ import annotations

import asyncio
import os

from appliance import events as ev
from appliance.spool import Spool, SpoolParams
from appliance.summary.jobs import SummaryJobs
from tests.events import collect
from tests.history.helpers import SESSION_ID, write_session
from tests.test_daemon import daemon_config, mic_file, start

from .helpers import completions


async def test_a_daemon_start_summarises_a_finished_session_that_has_no_summary_job(
    tmp_path, emulator
):
    config = daemon_config(tmp_path, emulator, "live", mic_file(tmp_path, "1"))
    config.spool.min_free_bytes = 0
    config.summary.enabled = True
    # The process before: summaries on (their queue opened), a session transcribed, then
    # a crash before its end queued the summary.
    spool = Spool(SpoolParams(tmp_path / "state" / "spool", min_free_bytes=0))
    jobs = SummaryJobs(spool.store.path)
    opened_at = jobs.opened_at
    jobs.close()
    spool.close()
    transcript = write_session(config.state_path)
    os.utime(transcript, (opened_at, opened_at))  # after the queue opened, before this start

    events = ev.EventBus()
    made = collect(events, ev.SummaryStored)
    app, runner = await start(config, events)
    try:
        for _ in range(400):
            if made:
                break
            await asyncio.sleep(0.05)
        assert [(e.source, e.source_id) for e in made] == [("session", SESSION_ID)]
        assert app.daemon is not None
        section = app.daemon.status_snapshot()["summaries"]
        assert section["completed"] == 1 and section["failed"] == 0
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0
    assert completions(emulator) == 1
    assert transcript.with_name(f"{SESSION_ID}.summary.json").is_file()
