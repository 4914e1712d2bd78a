"""A live session's summary: queued when it ends, made from its JSONL, stored beside it."""

from __future__ import annotations

import asyncio
import contextlib
import json

from appliance import dtmf
from appliance import events as ev
from appliance.audio.ring import RingBuffer
from appliance.live import LiveTranscription
from appliance.summary import jobs as sj
from appliance.summary.stored import read_summary
from appliance.summary.text import session_lines
from tests.events import collect
from tests.live.helpers import CAPTURE_RATE, Feeder, make_config, streaming_tokens

from .helpers import close, completions, make_worker


async def test_a_finished_live_session_gets_its_summary_once(emulator, spool, tmp_path):
    audio = dtmf.generate("12 34", CAPTURE_RATE, lead_ms=300, trail_ms=1500)
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    config = make_config(emulator, tmp_path)
    bus = ev.EventBus()
    seen = collect(bus, ev.SummaryStored)
    worker = make_worker(emulator, spool, config.state_path, bus)
    working = asyncio.create_task(worker.run())
    live = LiveTranscription.from_config(
        config, ring, streaming_tokens(emulator, config), spool, bus, config.state_path
    )
    feeder = Feeder(ring, audio)
    feeder.start()
    try:
        await asyncio.sleep(0)  # the worker listens for the session's end from here on
        task = asyncio.create_task(live.run(0))
        while not feeder.done.is_set():
            await asyncio.sleep(0.05)
        live.request_stop()
        await asyncio.wait_for(task, 30)
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.05)
    finally:
        feeder.halt.set()
        working.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await working
        await close(worker)
    sid = live.session_id
    assert [(e.source, e.source_id) for e in seen] == [("session", sid)]
    stored = read_summary(config.state_path, spool.root, "session", sid)
    assert stored is not None and stored.text == seen[0].text
    assert stored.text == "Summary:\n- 12\n- 34\n\nAction items:\n- none"
    beside = live.transcript_path.with_name(f"{sid}.summary.json")
    assert json.loads(beside.read_text())["source_id"] == sid
    assert completions(emulator) == 1


async def test_a_session_in_which_nothing_was_said_is_not_summarised(emulator, spool, tmp_path):
    worker = make_worker(emulator, spool, tmp_path / "state")
    try:
        worker.queue_session("abc123")  # no final turn: no JSONL was ever written
        await worker.drain(timeout=5)
        job = worker.jobs.get("session", "abc123")
    finally:
        await close(worker)
    assert job.state == sj.SKIPPED
    assert completions(emulator) == 0


async def test_a_session_waits_for_its_spooled_gaps_before_it_is_summarised(
    emulator, spool, tmp_path
):
    from tests.spool.helpers import record_digits

    worker = make_worker(emulator, spool, tmp_path / "state")
    try:
        record_digits(spool, "7", origin="live-gap", session_id="ab12", session_offset=0)
        worker.queue_session("ab12")
        with contextlib.suppress(TimeoutError):
            await worker.drain(timeout=1.0)
        job = worker.jobs.get("session", "ab12")
    finally:
        await close(worker)
    assert job.state == sj.PENDING and job.attempts == 0
    assert completions(emulator) == 0


def test_late_turns_take_their_place_in_stream_order_with_their_speakers():
    records = [
        {"text": "three", "words": [{"start_ms": 3000}], "speaker": "A"},
        {"text": "seven", "words": [{"start_ms": 7000}], "speaker": "B"},
        {"late": True, "text": "five", "offset_ms": 5000, "words": [{"start_ms": 5100}]},
        {"late": True, "text": "  ", "offset_ms": 6000, "words": []},
    ]
    assert session_lines(records) == ["Speaker A: three", "five", "Speaker B: seven"]
