"""The conversation with real audio: PortAudio -> ALSA -> PulseAudio null sinks, emulator.

DTMF "speech" is played into the ``mic`` sink (whose monitor the capture
records), the agent's reply audio goes to the ``spk`` sink, and ``spk.monitor``
is recorded with parecord and decoded, so what the speaker really played is
checked digit by digit.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import dtmf
from appliance import events as ev
from appliance.agent import VoiceAgentConversation
from appliance.audio.capture import AudioCapture, StreamState
from appliance.audio.playback import AudioPlayback
from appliance.config import ToolConfig
from tests.agent.helpers import agent_tokens, make_config, wait_for
from tests.events import collect
from tests.fixtures.pulse import on_every_stack

log = logging.getLogger(__name__)

pytestmark = pytest.mark.audio

CAPTURE_RATE = 48_000
SPEAKER_RATE = 24_000
QUIET_DBFS = -45.0
# Decoding the whole monitor recording costs ~10 ms of CPU; polling it every
# 20 ms took a third of a core from the audio and emulator threads.
HEARD_POLL = 0.1


class Listener:
    """Records ``spk.monitor`` into a raw file; decodes what the speaker played."""

    def __init__(self, pulse_server, path: Path) -> None:
        self.path = path
        self.proc = pulse_server.record_speaker(path, SPEAKER_RATE)

    def samples(self) -> np.ndarray:
        data = self.path.read_bytes() if self.path.exists() else b""
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")

    def digits(self) -> str:
        return dtmf.decode_digits(self.samples(), SPEAKER_RATE)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


@pytest.fixture
def capture(pulse_server):
    cap = AudioCapture(rate=CAPTURE_RATE, block_ms=20, history_seconds=10.0)
    cap.start()
    assert wait_sync(lambda: cap.state == StreamState.RUNNING, 10.0), cap.state_detail
    yield cap
    cap.stop()


@pytest.fixture
def speaker(pulse_server):
    """The daemon's speaker: ``AudioPlayback`` as ``wiring.open_sink`` builds it."""
    spk = AudioPlayback(input_rate=SPEAKER_RATE)
    spk.start()
    assert wait_sync(lambda: spk.state == StreamState.RUNNING, 10.0), spk.state_detail
    yield spk
    spk.stop()
    # A speaker declared lost was flushed and reopened: replies went missing.
    assert spk.losses == 0, f"speaker lost {spk.losses} time(s)"


@pytest.fixture
def listener(pulse_server, tmp_path):
    lis = Listener(pulse_server, tmp_path / "heard.raw")
    # Listening from the first sample: a new monitor stream can take a moment to
    # deliver, and a one-digit greeting played before then is not heard whole.
    assert wait_sync(lambda: lis.path.exists() and lis.path.stat().st_size > 0, 5.0)
    yield lis
    lis.stop()


def wait_sync(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


async def speak(pulse_server, digits: str) -> None:
    """Play DTMF digits into the microphone and wait until pacat has played them."""
    audio = dtmf.generate(digits, CAPTURE_RATE, lead_ms=50, trail_ms=50)
    proc = pulse_server.play_into_mic(audio, CAPTURE_RATE)
    await asyncio.to_thread(proc.wait, 10)


def start(emulator, capture, speaker, tmp_path, **kwargs):
    tools = kwargs.pop("tools", None)
    config = make_config(emulator, tmp_path, tools=tools, **kwargs)
    bus = ev.EventBus()
    seen = collect(bus, ev.Event)
    conv = VoiceAgentConversation(
        config, capture.ring, speaker, agent_tokens(emulator), bus, config.state_path
    )
    task = asyncio.create_task(conv.run(capture.ring.write_index))
    return conv, task, seen


def agent_records(emulator):
    return [s for s in emulator.state.sessions if s.kind == "agent"]


def loud_runs(samples: np.ndarray, block: int = SPEAKER_RATE // 100) -> list[tuple[int, int]]:
    """(start, end) sample offsets of the stretches louder than ``QUIET_DBFS``, block by block."""
    runs: list[tuple[int, int]] = []
    for pos in range(0, len(samples) - block + 1, block):
        if dbfs(samples[pos : pos + block]) < QUIET_DBFS:
            continue
        if runs and runs[-1][1] == pos:
            runs[-1] = (runs[-1][0], pos + block)
        else:
            runs.append((pos, pos + block))
    return runs


def dbfs(samples: np.ndarray) -> float:
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * np.log10(max(rms, 1e-3) / 32768.0)


@on_every_stack
async def test_greeting_then_question_and_reply_through_the_real_audio_path(
    emulator, pulse_server, capture, speaker, listener, tmp_path
):
    emulator.set_agent_script(greeting_digits="5")
    conv, task, seen = start(emulator, capture, speaker, tmp_path)
    await wait_for(
        lambda: listener.digits() == "5", 15, "the greeting on the speaker monitor", HEARD_POLL
    )
    await wait_for(lambda: not conv.speaking, 5, "the greeting to drain")
    await speak(pulse_server, "12")
    await wait_for(
        lambda: listener.digits() == "512", 15, "the reply on the speaker monitor", HEARD_POLL
    )
    conv.request_stop()
    account = await asyncio.wait_for(task, 10)

    finals = [e.text for e in seen if isinstance(e, ev.AgentUser) and e.final]
    assert finals == ["one two"]
    assert account.stop_reason == "stopped" and account.balanced
    (record,) = agent_records(emulator)
    ready_at = record.sent("session.ready") and next(
        m.t
        for m in record.messages
        if m.direction == "out" and m.payload.get("type") == "session.ready"
    )
    audio_in = [
        m.t
        for m in record.messages
        if m.direction == "in"
        and isinstance(m.payload, dict)
        and m.payload.get("type") == "input.audio"
    ]
    assert audio_in and min(audio_in) >= ready_at
    assert not record.sent("session.error")  # the emulator rejected nothing


@on_every_stack
async def test_speaking_over_the_reply_silences_the_speaker(
    emulator, pulse_server, capture, speaker, listener, tmp_path
):
    greeting = "1234567890" * 2  # about 4 s of speech
    emulator.set_agent_script(greeting_digits=greeting, reply_digits="#")
    conv, task, _ = start(emulator, capture, speaker, tmp_path, echo="full_duplex")
    await wait_for(
        lambda: listener.digits().startswith("12"), 15, "the greeting to be heard", HEARD_POLL
    )
    flushed_at: list[tuple[float, int]] = []
    original_flush = speaker.flush

    def flush() -> None:
        original_flush()
        flushed_at.append((time.monotonic(), len(listener.samples())))

    speaker.flush = flush
    await speak(pulse_server, "9")
    await wait_for(lambda: flushed_at, 10, "the speaker flush after barge-in")
    await wait_for(
        lambda: listener.digits().endswith("#"), 10, "the answer to the barge-in", HEARD_POLL
    )
    heard = listener.samples()
    conv.request_stop()
    account = await asyncio.wait_for(task, 10)

    # When did the monitor go quiet for good after the flush? (Measured and logged, not
    # asserted.)  After the flush come at most the greeting's tail (what the stream already
    # held) and then the answer; DTMF pauses between digits, so the first quiet block alone
    # says nothing.
    _, flush_pos = flushed_at[0]
    runs = loud_runs(heard[flush_pos:])
    assert runs, "the answer was not heard after the interruption"
    *before_answer, _answer = runs
    quiet_ms = before_answer[-1][1] * 1000 / SPEAKER_RATE if before_answer else 0.0
    log.info(
        "barge-in: speaker quiet %.0f ms after the flush (%s)",
        quiet_ms,
        "greeting tail played out" if before_answer else "flush fell between two digits",
    )
    assert len(before_answer) <= 1, f"stale audio after the speaker went quiet: {runs}"
    # What was heard: part of the greeting, then straight the answer "#": no stale digits.
    digits = dtmf.decode_digits(heard, SPEAKER_RATE)
    assert digits.endswith("#")
    assert digits[:-1] != greeting and greeting.startswith(digits[:-1])
    assert account.interrupted_replies == 1
    (record,) = agent_records(emulator)
    assert any(m.get("status") == "interrupted" for m in record.sent("reply.done"))


async def test_tool_call_and_resume_through_the_real_audio_path(
    emulator, pulse_server, capture, speaker, listener, tmp_path
):
    script = "import json,sys; a=json.load(sys.stdin); print(json.dumps({'v': a['n'] * 11}))"
    tools = [ToolConfig(name="double", kind="command", command=[sys.executable, "-c", script])]
    emulator.set_agent_script(greeting_digits="0")
    emulator.add_tool_trigger("7", "double", {"n": 4})
    conv, task, _ = start(emulator, capture, speaker, tmp_path, tools=tools)
    await wait_for(lambda: listener.digits() == "0", 15, "the greeting", HEARD_POLL)
    await wait_for(lambda: not conv.speaking, 5, "the greeting to drain")
    await speak(pulse_server, "7")
    await wait_for(lambda: listener.digits() == "044", 15, "the tool's answer (44)", HEARD_POLL)
    await wait_for(lambda: not conv.speaking, 5, "the answer to drain")
    first_id = conv.session_id
    emulator.drop(kind="agent")
    await wait_for(lambda: len(agent_records(emulator)) == 2, 10, "a reconnect")
    await wait_for(lambda: conv.protocol.ready, 10, "the resumed session")
    await speak(pulse_server, "36")
    await wait_for(lambda: listener.digits() == "04436", 15, "the reply after resuming", HEARD_POLL)
    conv.request_stop()
    account = await asyncio.wait_for(task, 10)
    assert account.resumes == 1 and account.session_ids == [first_id]
    assert emulator.state.token_reuse_attempts == 0 and emulator.state.tokens_issued == 2
    first, second = agent_records(emulator)
    assert second.received()[0] == {"type": "session.resume", "session_id": first_id}
    assert [r["result"] for r in first.received("tool.result")] == ['{"v":44}']
