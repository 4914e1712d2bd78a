"""The conversation runner against the emulator over loopback (speaker modelled in real time)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from appliance import dtmf
from appliance import events as ev
from appliance.agent import VoiceAgentConversation
from appliance.config import ToolConfig
from tests.agent.helpers import (
    CAPTURE_RATE,
    SimulatedSpeaker,
    agent_tokens,
    make_config,
    serve,
    wait_for,
)
from tests.events import collect


def digits_heard(speaker: SimulatedSpeaker) -> str:
    return dtmf.decode_digits(speaker.heard(), SimulatedSpeaker.RATE)


async def test_greeting_question_reply_and_transcript_file(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="5")
    config = make_config(emulator, tmp_path)
    speaker = SimulatedSpeaker()
    bus = ev.EventBus()
    seen = collect(bus, ev.Event)
    conv = VoiceAgentConversation(
        config, ring, speaker, agent_tokens(emulator), bus, config.state_path
    )
    task = asyncio.create_task(conv.run(ring.write_index))
    await wait_for(lambda: digits_heard(speaker) == "5" and speaker.idle, 10, "greeting")
    ring.feeder.say_digits("12")
    await wait_for(lambda: digits_heard(speaker) == "512", 10, "the reply 12")
    conv.request_stop()
    account = await asyncio.wait_for(task, 10)

    assert account.stop_reason == "stopped"
    assert account.user_turns == 1
    assert account.balanced
    assert any(isinstance(e, ev.AgentReply) for e in seen)
    finals = [e.text for e in seen if isinstance(e, ev.AgentUser) and e.final]
    assert finals == ["one two"]
    states = [e.state for e in seen if isinstance(e, ev.StateChanged)]
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


class Running:
    """A conversation started in the background, with what it played and published."""

    def __init__(self, emulator, ring, tmp_path, tools=None, on_notice=None, **agent) -> None:
        self.config = make_config(emulator, tmp_path, tools=tools, **agent)
        self.speaker = SimulatedSpeaker()
        self.bus = ev.EventBus()
        self.seen = collect(self.bus, ev.Event)
        self.conv = VoiceAgentConversation(
            self.config,
            ring,
            self.speaker,
            agent_tokens(emulator),
            self.bus,
            self.config.state_path,
            on_notice=on_notice,
        )
        self.task = asyncio.create_task(self.conv.run(ring.write_index))

    def heard(self) -> str:
        return digits_heard(self.speaker)

    async def stop(self):
        self.conv.request_stop()
        return await asyncio.wait_for(self.task, 10)


def agent_records(emulator):
    return [s for s in emulator.state.sessions if s.kind == "agent"]


async def test_a_stop_sends_everything_counted_sent_before_session_end(emulator, ring, tmp_path):
    """The resampler's tail (up to ~35 ms at 48 -> 24 kHz) goes out before ``session.end``:
    the service holds exactly the audio the account counts as sent."""
    run = Running(emulator, ring, tmp_path)
    await wait_for(lambda: run.conv.account.sent_samples >= CAPTURE_RATE, 10, "a second sent")
    account = await run.stop()
    (record,) = agent_records(emulator)
    assert record.received("session.end")
    assert account.sent_samples > 0
    assert len(record.audio()) * CAPTURE_RATE == account.sent_samples * 24_000


async def test_speaking_over_a_reply_interrupts_it_and_the_speaker_goes_quiet(
    emulator, ring, tmp_path
):
    emulator.set_agent_script(greeting_digits="1234567890")  # about 2 s of speech
    run = Running(emulator, ring, tmp_path, echo="full_duplex")
    await wait_for(lambda: run.heard().startswith("12"), 10, "the greeting to start")
    ring.feeder.say_digits("9")
    await wait_for(lambda: run.speaker.flushes, 5, "the speaker flush")
    await asyncio.sleep(0.5)
    heard = run.heard()
    account = await run.stop()
    assert account.interrupted_replies == 1
    assert heard != "1234567890" and "1234567890".startswith(heard)  # stale digits never heard
    replies = [e for e in run.seen if isinstance(e, ev.AgentReply)]
    assert replies[0].interrupted is True


async def test_button_interrupt_silences_the_reply_and_keeps_listening(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="1234567890")
    run = Running(emulator, ring, tmp_path)  # half duplex
    await wait_for(lambda: run.heard().startswith("12"), 10, "the greeting to start")
    assert run.conv.speaking
    run.conv.interrupt()
    assert run.speaker.flushes  # at once, not at the next tick
    assert not run.conv.speaking
    heard_at_interrupt = run.heard()
    ring.feeder.say_digits("47")  # the microphone is live again (not muted)
    await wait_for(lambda: run.heard().endswith("47"), 10, "the reply to 47")
    account = await run.stop()
    assert "1234567890".startswith(heard_at_interrupt)
    assert run.heard() == heard_at_interrupt + "47"
    assert account.user_turns == 1


async def test_half_duplex_mutes_the_microphone_while_the_agent_speaks(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="1234567890")
    run = Running(emulator, ring, tmp_path, echo="half_duplex")
    await wait_for(lambda: run.heard().startswith("1"), 10, "the greeting to start")
    ring.feeder.say_digits("9")  # spoken over the reply: the agent must not hear it
    await wait_for(lambda: run.heard() == "1234567890" and run.speaker.idle, 10, "greeting")
    await wait_for(lambda: not run.conv.speaking, 2, "unmute after drain")
    ring.feeder.say_digits("3")
    await wait_for(lambda: run.heard() == "12345678903", 10, "the reply to 3")
    account = await run.stop()
    assert account.interrupted_replies == 0
    assert account.muted_samples > 0
    assert account.sent_samples > account.muted_samples
    (record,) = agent_records(emulator)
    received = dtmf.decode_digits(record.audio(), 24_000)
    assert received == "3"  # the 9 said over the reply went out as silence


@pytest.fixture
async def weather_service():
    """A tiny HTTP tool service on 127.0.0.1."""
    from aiohttp import web

    calls: list[dict] = []

    async def weather(request: web.Request) -> web.Response:
        calls.append(await request.json())
        return web.json_response({"temp_c": 21})

    app = web.Application()
    app.router.add_post("/weather", weather)
    async with serve(app) as base:
        yield f"{base}/weather", calls


async def test_tool_calls_round_trip_through_http_and_command_tools(
    emulator, ring, tmp_path, weather_service
):
    url, calls = weather_service
    script = "import json,sys; a=json.load(sys.stdin); print(json.dumps({'count': a['n'] * 111}))"
    tools = [
        ToolConfig(name="weather", description="weather for a city", url=url,
                   parameters={"type": "object", "properties": {"city": {"type": "string"}}}),
        ToolConfig(name="count", kind="command", command=[sys.executable, "-c", script]),
    ]  # fmt: skip
    emulator.set_agent_script(greeting_digits="0")
    emulator.add_tool_trigger("7", "weather", {"city": "Oslo"})
    emulator.add_tool_trigger("8", "count", {"n": 3})
    run = Running(emulator, ring, tmp_path, tools=tools)
    await wait_for(lambda: run.heard() == "0" and run.speaker.idle, 10, "greeting")
    await wait_for(lambda: not run.conv.speaking, 2, "unmute")
    ring.feeder.say_digits("7")
    await wait_for(lambda: run.heard() == "021", 10, "the weather reply (21)")
    await wait_for(lambda: run.speaker.idle and not run.conv.speaking, 5, "unmute")
    ring.feeder.say_digits("8")
    await wait_for(lambda: run.heard() == "021333", 10, "the count reply (333)")
    account = await run.stop()
    assert calls == [{"city": "Oslo"}]
    assert account.tool_calls == 2
    (record,) = agent_records(emulator)
    (update,) = record.received("session.update")
    assert [t["name"] for t in update["session"]["tools"]] == ["weather", "count"]
    assert all("function" not in t for t in update["session"]["tools"])
    results = record.received("tool.result")
    assert [json.loads(r["result"]) for r in results] == [{"temp_c": 21}, {"count": 333}]
    # each result went out after the reply.done of the reply that asked for it
    times = {id(m.payload): m.t for m in record.messages}
    for result in results:
        done_before = [
            m.t
            for m in record.messages
            if m.direction == "out" and m.payload.get("type") == "reply.done"
        ]
        assert any(t < times[id(result)] for t in done_before)


async def test_dropped_connection_resumes_with_a_new_token(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="0")
    run = Running(emulator, ring, tmp_path)
    await wait_for(lambda: run.heard() == "0" and run.speaker.idle, 10, "greeting")
    await wait_for(lambda: not run.conv.speaking, 2, "unmute")
    first_id = run.conv.session_id
    emulator.drop(kind="agent")
    await wait_for(lambda: len(agent_records(emulator)) == 2, 10, "a second connection")
    await wait_for(lambda: run.conv.protocol.ready, 10, "the resumed session")
    ring.feeder.say_digits("56")
    await wait_for(lambda: run.heard() == "056", 10, "the reply after resuming")
    account = await run.stop()
    first, second = agent_records(emulator)
    assert second.received()[0] == {"type": "session.resume", "session_id": first_id}
    assert account.resumes == 1 and account.session_ids == [first_id]
    assert emulator.state.tokens_issued == 2
    assert emulator.state.token_reuse_attempts == 0
    assert first.auth == second.auth == "token"
    assert account.balanced


async def test_resume_refused_after_the_window_starts_a_new_conversation(emulator, ring, tmp_path):
    notices: list[str] = []
    emulator.set_agent_script(greeting_digits="0")
    run = Running(emulator, ring, tmp_path, on_notice=notices.append)
    await wait_for(lambda: run.heard() == "0" and run.speaker.idle, 10, "greeting")
    first_id = run.conv.session_id
    # Down longer than the service's (scaled, 1.5 s) resume window.
    emulator.network_down(2.5)
    await wait_for(lambda: notices, 15, "the new-conversation notice")
    await wait_for(lambda: run.conv.protocol.ready, 10, "the new session")
    account = await run.stop()
    assert notices == ["new_conversation"]
    assert account.new_conversations == 1
    assert len(account.session_ids) == 2 and account.session_ids[0] == first_id
    phases = [e.phase for e in run.seen if isinstance(e, ev.SessionPhase)]
    assert "new_conversation" in phases
    refused = [r for r in agent_records(emulator) if r.sent("session.error")]
    assert any(
        e["code"] in ("session_expired", "session_not_found") for r in refused for e in r.sent()
        if e.get("type") == "session.error"
    )  # fmt: skip
    assert emulator.state.token_reuse_attempts == 0
    assert account.balanced


async def test_idle_conversation_ends_itself(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="0")
    run = Running(emulator, ring, tmp_path)
    run.conv.protocol.idle_timeout_seconds = 1.0
    account = await asyncio.wait_for(run.task, 10)
    assert account.stop_reason == "idle"
    (record,) = agent_records(emulator)
    assert record.received("session.end")
    assert record.sent("session.ended")


async def test_garbled_messages_are_survived(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="0")
    run = Running(emulator, ring, tmp_path)
    await wait_for(lambda: run.heard() == "0" and run.speaker.idle, 10, "greeting")
    await wait_for(lambda: not run.conv.speaking, 2, "unmute")
    emulator.garble(count=2, mode="invalid_json", kind="agent")
    ring.feeder.say_digits("3")
    await wait_for(lambda: run.conv.protocol.stats.garbled_messages == 2, 10, "garbled input")
    await wait_for(lambda: run.speaker.idle and not run.conv.speaking, 10, "the reply to 3")
    emulator.garble(count=1, mode="unknown_type", kind="agent")
    ring.feeder.say_digits("4")
    await wait_for(lambda: run.heard().endswith("4"), 10, "a reply after the garbage")
    account = await run.stop()
    assert account.garbled_messages == 2
    assert run.conv.protocol.stats.unknown_messages == 1
    assert account.connections == 1


async def test_a_refused_token_is_replaced_and_the_conversation_goes_on(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="0")
    emulator.refuse_tokens(count=1)
    run = Running(emulator, ring, tmp_path)
    seen_errors = collect(run.bus, ev.ErrorReported)
    await wait_for(lambda: run.heard() == "0", 10, "the greeting on the second connection")
    account = await run.stop()
    assert account.connections == 2 and account.error is None
    assert any("rejected" in e.message for e in seen_errors)
    assert emulator.state.tokens_issued == 2 and emulator.state.token_reuse_attempts == 0
