"""End to end: DTMF "speech" in a 48 kHz capture ring, streamed through the emulator."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np

from appliance import dtmf
from appliance import events as ev
from appliance.audio.ring import RingBuffer
from appliance.cloud.streaming import STREAM_RATE
from appliance.cloud.tokens import MintedTokens
from appliance.config import Config, ReconnectConfig
from appliance.emulator.recognizer import digits_of
from appliance.live import LiveTranscription, live_query
from appliance.secrets import Secret
from tests.fixtures.emulator import emulator, emulator_config  # noqa: F401

CAPTURE_RATE = 48_000
BLOCK = 960  # 20 ms


class Feeder(threading.Thread):
    """Writes ``samples`` into the ring at real-time pace, like a microphone, then silence."""

    def __init__(self, ring: RingBuffer, samples: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.ring = ring
        self.samples = samples
        self.done = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        i = 0
        silence = np.zeros(BLOCK, dtype=np.int16)
        while not self.halt.is_set():
            block = self.samples[i : i + BLOCK] if i < len(self.samples) else silence
            if i >= len(self.samples):
                self.done.set()
            if len(block) < BLOCK:
                block = np.concatenate([block, silence[: BLOCK - len(block)]])
            due = t0 + i / CAPTURE_RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.ring.write(block, due)
            i += BLOCK


def make_config(emu, tmp_path, **live) -> Config:
    config = Config()
    config.endpoints.base_url = emu.http_url
    config.state_dir = tmp_path / "state"
    for name, value in live.items():
        setattr(config.live, name, value)
    return config


class MemorySpool:
    """A spool stand-in that keeps recordings in memory, to decode what was kept."""

    def __init__(self) -> None:
        self.recordings: list[dict] = []

    def open_recording(
        self, origin, rate, session_id=None, started_at=None, *, session_offset=None
    ):
        spool = self

        class Writer:
            id = f"rec{len(spool.recordings)}"

            def __init__(self) -> None:
                self.parts: list[np.ndarray] = []
                self.closed = False
                spool.recordings.append(
                    {
                        "origin": origin,
                        "rate": rate,
                        "session_id": session_id,
                        "offset": session_offset,
                        "writer": self,
                    }
                )

            def write(self, samples):
                self.parts.append(np.array(samples, dtype=np.int16))

            def close(self):
                self.closed = True

        return Writer()

    def audio(self) -> list[tuple[int, np.ndarray]]:
        return [
            (r["offset"], np.concatenate(r["writer"].parts) if r["writer"].parts else np.zeros(0))
            for r in self.recordings
        ]


def decode_all(samples: np.ndarray, rate: int) -> str:
    decoder = dtmf.DtmfDecoder(rate)
    events = list(decoder.feed(samples)) + list(decoder.flush())
    return "".join(e.digit for e in events)


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


async def test_press_speak_stop_yields_the_digits_exactly(emulator, tmp_path):  # noqa: F811
    digits = "123 456 789"
    audio = dtmf.generate(digits, CAPTURE_RATE, lead_ms=300, trail_ms=1500)
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    config = make_config(emulator, tmp_path)
    tokens = MintedTokens.streaming(
        config.urls.streaming_token_url, Secret(emulator.api_key), expires_in_seconds=60
    )
    bus = ev.EventBus()
    seen: list[ev.Event] = []
    bus.add_callback(seen.append)
    live = LiveTranscription(config, ring, tokens, MemorySpool(), bus, config.state_path)
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
    assert account.captured_samples == account.streamed_samples
    assert account.captured_samples >= len(audio) // 3 - STREAM_RATE // 10
    lines = [json.loads(x) for x in live.transcript_path.read_text().splitlines()]
    assert [x["turn_order"] for x in lines] == list(range(len(lines)))
    assert all(x["session_id"] == live.session_id and x["words"] for x in lines)
    assert any(e.kind == ev.TURN_PARTIAL for e in seen)
    assert sum(e.kind == ev.TURN_FINAL for e in seen) == len(finals)
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


async def test_twenty_faults_lose_and_duplicate_nothing(emulator, tmp_path):  # noqa: F811
    groups = ["12", "34", "56", "78", "90", "21", "43", "65", "87", "09"] * 2
    digits = " ".join(groups)
    audio = dtmf.generate(digits, CAPTURE_RATE, lead_ms=300, trail_ms=1500)
    ring = RingBuffer(CAPTURE_RATE, 4.0)  # short history: the outage outlasts it
    config = make_config(emulator, tmp_path, catchup_rate=1.4)
    config.reconnect = ReconnectConfig(base_seconds=0.2, max_seconds=1.0, auth_retry_seconds=1.0)
    tokens = MintedTokens.streaming(
        config.urls.streaming_token_url, Secret(emulator.api_key), expires_in_seconds=60
    )
    spool = MemorySpool()
    live = LiveTranscription(config, ring, tokens, spool, ev.EventBus(), config.state_path)
    feeder = Feeder(ring, audio)
    feeder.start()
    applied = []
    try:
        task = asyncio.create_task(live.run(0))
        await asyncio.sleep(1.0)
        for name, fault in _fault_plan(emulator):
            await asyncio.to_thread(fault)
            applied.append(name)
            await asyncio.sleep(1.2 if "network" not in name else 6.0)
        while not feeder.done.is_set():
            await asyncio.sleep(0.05)
        live.request_stop()
        account = await asyncio.wait_for(task, 40)
    finally:
        feeder.halt.set()
    assert len(applied) == 20
    # Every digit exactly once, in order, across live turns and spooled audio.
    heard: list[tuple[float, str]] = []
    for turn in live.turns:
        for word in turn.words:
            for d in digits_of(word.text):
                heard.append((word.start_ms / 1000, d))
    for offset, samples in spool.audio():
        decoder = dtmf.DtmfDecoder(STREAM_RATE)
        for e in list(decoder.feed(samples)) + list(decoder.flush()):
            heard.append((offset / STREAM_RATE + e.start_s, e.digit))
    heard.sort()
    assert "".join(d for _, d in heard) == digits.replace(" ", "")
    assert account.balanced
    assert account.spooled_samples > 0  # the long outage went to the spool
    assert account.streamed_samples > 0 and live.turns  # and the rest streamed live
    assert account.lost_samples == 0
    assert account.reconnects >= 15
    assert all(r["session_id"] == live.session_id for r in spool.recordings)
    assert all(r["writer"].closed for r in spool.recordings)
    state = emulator.state
    assert state.token_reuse_attempts == 0
    assert state.counters["chunk_size_violations"] == 0
    assert state.counters["rate_violations"] == 0
