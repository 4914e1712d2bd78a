"""End to end: DTMF "speech" in a 48 kHz capture ring, streamed through the emulator.

The spool is the real one (SQLite + WAV segments in a tmp dir), and in the fault
test the real uploader sends what was spooled to the same emulator's
pre-recorded API, so "every digit exactly once" is checked on the words the
user would actually get back: live turns plus the gaps' stored transcripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from appliance import dtmf
from appliance import events as ev
from appliance.audio.ring import RingBuffer
from appliance.config import Config, ReconnectConfig
from appliance.emulator.recognizer import digits_of
from appliance.live import LiveTranscription, live_query
from appliance.protocol.streaming import STREAM_RATE
from appliance.spool.uploader import Uploader
from tests.events import collect

from .helpers import (
    CAPTURE_RATE,
    Feeder,
    heard_in_spool_transcripts,
    heard_live,
    kept_samples,
    make_config,
    rest_client,
    streaming_tokens,
    until_transcribed,
)


def test_query_carries_the_documented_parameters():
    config = Config()
    config.live.keyterms_prompt = ["Pi", "GPIO"]
    config.live.min_turn_silence = 300
    config.live.domain = "medical-v1"
    q = live_query(config.live)
    assert q["sample_rate"] == "16000" and q["encoding"] == "pcm_s16le"
    assert q["speech_model"] == "u3-rt-pro" and q["format_turns"] == "true"
    assert json.loads(q["keyterms_prompt"]) == ["Pi", "GPIO"]
    assert q["min_turn_silence"] == "300" and q["domain"] == "medical-v1"
    assert "prompt" not in q and "inactivity_timeout" not in q


async def test_press_speak_stop_yields_the_digits_exactly(emulator, spool, tmp_path):
    digits = "123 456 789"
    audio = dtmf.generate(digits, CAPTURE_RATE, lead_ms=300, trail_ms=1500)
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    config = make_config(emulator, tmp_path)
    bus = ev.EventBus()
    seen = collect(bus, ev.Event)
    spool.events = bus
    live = LiveTranscription.from_config(
        config, ring, streaming_tokens(emulator, config), spool, bus, config.state_path
    )
    feeder = Feeder(ring, audio)
    feeder.start()
    try:
        task = asyncio.create_task(live.run(0))
        while not feeder.done.is_set():
            await asyncio.sleep(0.05)
        live.request_stop()
        account = await asyncio.wait_for(task, 30)
    finally:
        feeder.halt.set()
    finals = [t for t in live.turns if t.final]
    assert "".join(digits_of(t.text) for t in finals) == digits.replace(" ", "")
    assert account.balanced
    assert account.spooled_samples == 0 and account.lost_samples == 0
    assert spool.list() == [] and live.spool_recordings == []
    assert account.captured_samples == account.streamed_samples
    assert account.captured_samples >= len(audio) // 3 - STREAM_RATE // 10
    lines = [json.loads(x) for x in live.transcript_path.read_text().splitlines()]
    assert [x["turn_order"] for x in lines] == list(range(len(lines)))
    assert all(x["session_id"] == live.session_id and x["words"] for x in lines)
    assert any(isinstance(e, ev.TurnPartial) for e in seen)
    assert sum(isinstance(e, ev.TurnFinal) for e in seen) == len(finals)
    assert not any(isinstance(e, ev.ErrorReported) for e in seen)
    state = emulator.state
    assert state.token_reuse_attempts == 0
    assert state.counters["chunk_size_violations"] == 0
    assert state.counters["rate_violations"] == 0
    sessions = [s for s in state.sessions if s.kind == "streaming"]
    assert len(sessions) == 1 and sessions[0].auth == "token"
    # The Terminate handshake happened: the server sent Termination.
    assert sessions[0].sent("Termination")


def _fault_plan(emu):
    """Twenty faults of every kind, applied one after another."""
    return [
        ("drop", lambda: emu.drop()),
        ("close 3005", lambda: emu.close(3005, "Session cancelled")),
        ("token refused once", lambda: (emu.refuse_tokens(1), emu.drop())),
        ("close 3009", lambda: emu.close(3009, "Too many concurrent sessions")),
        ("garbled message", lambda: emu.garble(1)),
        ("session expired 3008", lambda: emu.expire_sessions()),
        ("close 3006", lambda: emu.close(3006, "Invalid Message")),
        ("close 3007", lambda: emu.close(3007, "Input duration violation: 20 ms")),
        ("tokens refused twice", lambda: (emu.refuse_tokens(2), emu.drop())),
        ("network down > ring history", lambda: emu.network_down(5.0)),
        ("drop", lambda: emu.drop()),
        (
            "token endpoint 503",
            lambda: (emu.fail_http(503, 1, path_prefix="/v3/token"), emu.drop()),
        ),
        ("token endpoint 429", lambda: (emu.fail_http(429, 1, 1, "/v3/token"), emu.drop())),
        ("unknown message type", lambda: emu.garble(1, "unknown_type")),
        ("close 1011", lambda: emu.close(1011, "internal error")),
        ("drop", lambda: emu.drop()),
        ("close 3005", lambda: emu.close(3005, "Session cancelled")),
        ("delayed messages", lambda: emu.delay_messages(0.3, 3)),
        ("drop", lambda: emu.drop()),
        ("session expired 3008", lambda: emu.expire_sessions()),
    ]


async def test_twenty_faults_lose_and_duplicate_nothing(emulator, spool, tmp_path):
    """The promise, literally: each digit once, in order, in what the user gets back --
    live turns, and the pre-recorded transcripts of the spooled gaps placed at their
    session offsets -- with the real spool and uploader on the same emulator."""
    groups = ["12", "34", "56", "78", "90", "21", "43", "65", "87", "09"] * 2
    digits = " ".join(groups)
    audio = dtmf.generate(digits, CAPTURE_RATE, lead_ms=300, trail_ms=1500)
    ring = RingBuffer(CAPTURE_RATE, 4.0)  # short history: the outage outlasts it
    config = make_config(emulator, tmp_path)
    config.reconnect = ReconnectConfig(base_seconds=0.2, max_seconds=1.0, auth_retry_seconds=1.0)
    bus = ev.EventBus()
    spool.events = bus
    live = LiveTranscription.from_config(
        config, ring, streaming_tokens(emulator, config), spool, bus, config.state_path
    )
    feeder = Feeder(ring, audio)
    applied = []
    async with rest_client(emulator) as client:
        uploader = Uploader(
            spool,
            client,
            config.upload,
            bus,
            retry_base=0.05,
            retry_cap=0.5,
            probe_base=0.05,
            probe_cap=0.5,
        )
        uploading = asyncio.create_task(uploader.run())
        feeder.start()
        try:
            task = asyncio.create_task(live.run(0))
            await asyncio.sleep(1.0)
            for name, fault in _fault_plan(emulator):
                await asyncio.to_thread(fault)
                applied.append(name)
                await asyncio.sleep(1.2 if "network" not in name else 6.0)
                uploader.wake()  # gaps spooled so far go up while the session goes on
            while not feeder.done.is_set():
                await asyncio.sleep(0.05)
            live.request_stop()
            account = await asyncio.wait_for(task, 40)
            await until_transcribed(spool, uploader, timeout=20)
        finally:
            feeder.halt.set()
            uploading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uploading
    assert len(applied) == 20
    rows = [r for r in spool.list() if r.session_id == live.session_id]
    assert rows and all(r.origin == "live-gap" for r in rows)
    assert sorted(live.spool_recordings) == sorted(r.id for r in rows)
    # Every digit exactly once, in order: live turns + the gaps' stored transcripts.
    spooled_words = heard_in_spool_transcripts(spool, live.session_id)
    heard = sorted(heard_live(live.turns) + spooled_words)
    assert "".join(d for _, d in heard) == digits.replace(" ", "")
    assert spooled_words and heard_live(live.turns)  # the outage went to the spool, rest live
    # The account matches the disk to the sample.
    assert account.balanced and account.lost_samples == 0
    assert account.spooled_samples == kept_samples(spool, live.session_id) > 0
    assert account.streamed_samples > 0
    assert account.reconnects >= 15
    assert all(r.lost_samples == 0 and r.gaps == [] for r in rows)
    state = emulator.state
    assert state.token_reuse_attempts == 0
    assert max(state.sessions_per_token().values()) <= 1  # one connection per token
    assert state.counters["chunk_size_violations"] == 0
    assert state.counters["rate_violations"] == 0
    # One submission per uploaded content, and every gap was submitted.
    assert state.submissions_by_hash and set(state.submissions_by_hash.values()) == {1}
    assert len(state.submissions_by_hash) == len({r.content_hash for r in rows})
