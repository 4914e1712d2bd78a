"""One live session against the strict emulator, through every kind of fault at once.

About 90 s of DTMF "speech" with a drop, a 3005 close, a 5 s stall, a network
outage longer than the ring buffer, three refused tokens (429 with
Retry-After, then two 503s) and a refused upgrade. What the user gets back is
the session's JSONL file (live turns, then the late turns the uploader joins
at their offsets): every digit exactly once, in order. The emulator's record
of client rules shows none broken, and each fault cost one reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from appliance import dtmf
from appliance import events as ev
from appliance.audio.ring import RingBuffer
from appliance.config import ReconnectConfig
from appliance.connection.tokens import TokenCoordinator
from appliance.emulator.recognizer import digits_of
from appliance.late import LateTranscripts
from appliance.live import LiveTranscription
from appliance.spool.uploader import Uploader
from tests.fixtures.emulator import TEST_TIME_SCALE

from .helpers import (
    CAPTURE_RATE,
    Feeder,
    make_config,
    rest_client,
    streaming_tokens,
    until_transcribed,
)

pytestmark = pytest.mark.slow

GROUPS = ["12", "34", "56", "78", "90", "21", "43", "65", "87", "09"] * 3
RING_SECONDS = 8.0  # the outage below outlasts it
OUTAGE_SECONDS = 12.0
STALL_SECONDS = 5.0


def heard_in_file(path) -> list[tuple[int, str]]:
    """(session ms, digit) for every word of every turn in a session's JSONL, live or late."""
    heard = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for word in record["words"]:
            heard += [(word["start_ms"], d) for d in digits_of(word["text"])]
    return sorted(heard)


def fault_plan(emu):
    """(name, fault, seconds to let it play out); each should cost one reconnection."""
    return [
        ("drop", lambda: emu.drop(), 6.0),
        ("close 3005", lambda: emu.close(3005, "Session cancelled"), 6.0),
        ("stall, then reset", lambda: emu.stall(STALL_SECONDS), STALL_SECONDS + 6.0),
        ("outage past the ring", lambda: emu.network_down(OUTAGE_SECONDS), OUTAGE_SECONDS + 8.0),
        (
            "three refused tokens",
            lambda: (
                emu.fail_http(429, 1, retry_after="2", path_prefix="/v3/token"),
                emu.fail_http(503, 2, path_prefix="/v3/token"),
                emu.drop(),
            ),
            10.0,
        ),
        (
            "refused upgrade",
            lambda: (emu.fail_http(503, 1, path_prefix="/v3/ws"), emu.drop()),
            6.0,
        ),
    ]


async def test_every_digit_once_and_no_rule_broken_through_every_fault(emulator, spool, tmp_path):
    digits = " ".join(GROUPS)
    audio = dtmf.generate(digits, CAPTURE_RATE, lead_ms=300, trail_ms=1500)
    ring = RingBuffer(CAPTURE_RATE, RING_SECONDS)
    config = make_config(emulator, tmp_path)
    config.reconnect = ReconnectConfig(base_seconds=0.2, max_seconds=2.0, auth_retry_seconds=10.0)
    bus = ev.EventBus()
    spool.events = bus
    source = streaming_tokens(emulator, config)
    # The emulator's clock for tokens runs TEST_TIME_SCALE times faster: say so.
    tokens = TokenCoordinator(source, lifetime_seconds=source.lifetime_seconds * TEST_TIME_SCALE)
    live = LiveTranscription.from_config(config, ring, tokens, spool, bus, config.state_path)
    feeder = Feeder(ring, audio)
    emulator.clear_violations()
    applied = []
    async with rest_client(emulator) as client:
        uploader = Uploader(
            spool,
            client,
            config.upload,
            bus,
            retry_base=0.1,
            retry_cap=0.5,
            probe_base=0.1,
            probe_cap=0.5,
            on_transcript=LateTranscripts(config.state_path, bus),
        )
        uploading = asyncio.create_task(uploader.run())
        tokens.start()
        feeder.start()
        try:
            task = asyncio.create_task(live.run(0))
            await asyncio.sleep(4.0)
            for name, fault, settle in fault_plan(emulator):
                await asyncio.to_thread(fault)
                applied.append(name)
                await asyncio.sleep(settle)
            while not feeder.done.is_set():
                await asyncio.sleep(0.05)
            live.request_stop()
            account = await asyncio.wait_for(task, 40)
            await until_transcribed(spool, uploader, timeout=30)
        finally:
            feeder.halt.set()
            await tokens.aclose()
            uploading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uploading
    assert len(applied) == 6
    # Every digit exactly once, in order, in what the device wrote for the user.
    heard = heard_in_file(live.transcript_path)
    assert "".join(d for _, d in heard) == digits.replace(" ", "")
    records = [json.loads(x) for x in live.transcript_path.read_text().splitlines()]
    assert any(r.get("late") for r in records) and any(not r.get("late") for r in records)
    # The account is exact, and nothing was lost.
    assert account.balanced and account.lost_samples == 0
    assert account.spooled_samples > 0 and account.streamed_samples > 0
    state = emulator.state
    # No client rule broken: pacing, token reuse, retries too soon, lockstep delays,
    # ignored Retry-After. A session the device left without Terminate is allowed only
    # when the server had stopped answering (the stall: the keepalive gave up on it).
    broken = [
        v
        for v in state.violations
        if not (v.rule == "abandoned" and v.data.get("close_code") == 1011)
    ]
    assert broken == [], [v.as_dict() for v in broken]
    assert state.counters["rate_violations"] == 0
    assert state.token_reuse_attempts == 0
    # Each fault cost one reconnection, not a cascade.
    begun = [s for s in state.sessions if s.kind == "streaming" and s.sent("Begin")]
    assert len(begun) == 1 + len(applied), [(s.id, s.close_code) for s in begun]
