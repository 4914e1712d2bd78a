"""The conversation runner against the emulator over loopback (speaker modelled in real time)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from appliance import dtmf
from appliance import events as ev
from appliance.agent import VoiceAgentConversation
from appliance.audio.ring import RingBuffer
from tests.agent.helpers import (
    CAPTURE_RATE,
    Feeder,
    SimulatedSpeaker,
    agent_tokens,
    make_config,
    wait_for,
)


@pytest.fixture
def ring():
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    feeder = Feeder(ring)
    feeder.start()
    ring.feeder = feeder
    yield ring
    feeder.halt.set()
    feeder.join(2)


def digits_heard(speaker: SimulatedSpeaker) -> str:
    return dtmf.decode_digits(speaker.heard(), SimulatedSpeaker.RATE)


async def test_greeting_question_reply_and_transcript_file(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="5")
    config = make_config(emulator, tmp_path)
    speaker = SimulatedSpeaker()
    bus = ev.EventBus()
    seen: list[ev.Event] = []
    bus.add_callback(seen.append)
    conv = VoiceAgentConversation(
        config, ring, speaker, agent_tokens(emulator), bus, config.state_path
    )
    task = asyncio.create_task(conv.run(ring.write_index))
    await wait_for(lambda: digits_heard(speaker) == "5" and speaker.drained, 10, "greeting")
    ring.feeder.say_digits("12")
    await wait_for(lambda: digits_heard(speaker) == "512", 10, "the reply 12")
    conv.request_stop()
    account = await asyncio.wait_for(task, 10)

    assert account.stop_reason == "stopped"
    assert account.user_turns == 1
    assert account.balanced
    kinds = [e.kind for e in seen]
    assert ev.AGENT_USER in kinds and ev.AGENT_REPLY in kinds
    finals = [e.data["text"] for e in seen if e.kind == ev.AGENT_USER and e.data["final"]]
    assert finals == ["one two"]
    states = [e.data["state"] for e in seen if e.kind == ev.STATE]
    assert "agent_speaking" in states and states[-1] == "listening"

    # The emulator saw: session.update first, no input.audio before session.ready, session.end.
    (record,) = [s for s in emulator.state.sessions if s.kind == "agent"]
    first_in = next(m for m in record.messages if m.direction == "in")
    assert first_in.payload["type"] == "session.update"
    ready_at = next(
        m.t
        for m in record.messages
        if m.direction == "out" and m.payload.get("type") == "session.ready"
    )
    audio_times = [
        m.t
        for m in record.messages
        if m.direction == "in"
        and isinstance(m.payload, dict)
        and m.payload.get("type") == "input.audio"
    ]
    assert audio_times and min(audio_times) >= ready_at
    assert record.received("session.end")
    assert record.auth == "token"

    lines = [json.loads(line) for line in Path(account.transcript_path).read_text().splitlines()]
    said = [(r["role"], r["text"]) for r in lines if "role" in r]
    assert ("user", "one two") in said
    assert any(role == "agent" for role, _ in said)
    assert {r["session_id"] for r in lines if "role" in r} == set(account.session_ids)
