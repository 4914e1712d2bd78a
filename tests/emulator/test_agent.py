"""Voice Agent API emulation: lifecycle rules, DTMF conversation, barge-in, tools, resume."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import httpx
import numpy as np
import pytest
import websockets

from appliance import dtmf
from appliance.emulator import Emulator
from appliance.emulator.config import LOOSE_RATE_ALLOWANCE
from tests.emulator.clients import expect_close
from tests.fixtures.emulator import make_test_config

RATE = 24000
SESSION = {"system_prompt": "Be brief.", "output": {"voice": "ivy"}}


def agent_token(emu) -> str:
    r = httpx.get(
        f"{emu.http_url}/v1/token",
        params={"expires_in_seconds": 60},
        headers={"Authorization": f"Bearer {emu.api_key}"},
    )
    r.raise_for_status()
    return r.json()["token"]


def bearer(emu) -> dict:
    return {"Authorization": f"Bearer {emu.api_key}"}


async def recv_until(ws, type_: str, seen: list | None = None, timeout: float = 5.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if seen is not None:
                seen.append(message)
            if message["type"] == type_:
                return message


async def speak(ws, digits: str, trail_ms: int = 600) -> None:
    """Send DTMF 'speech' as input.audio in 50 ms chunks at real time."""
    audio = dtmf.generate(digits, RATE, lead_ms=100, trail_ms=trail_ms)
    step = RATE // 20
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, i in enumerate(range(0, audio.size, step)):
        data = base64.b64encode(audio[i : i + step].tobytes()).decode()
        await ws.send(json.dumps({"type": "input.audio", "audio": data}))
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.05 - loop.time()))


def reply_digits(messages: list[dict], reply_id: str) -> str:
    chunks = [
        np.frombuffer(base64.b64decode(m["data"]), dtype="<i2")
        for m in messages
        if m["type"] == "reply.audio" and m["reply_id"] == reply_id
    ]
    return dtmf.decode_digits(np.concatenate(chunks), RATE) if chunks else ""


async def open_session(emu, session: dict | None = None, **connect) -> tuple:
    ws = await websockets.connect(
        f"{emu.ws_url}/v1/ws", **(connect or {"additional_headers": bearer(emu)})
    )
    await ws.send(json.dumps({"type": "session.update", "session": session or SESSION}))
    ready = await recv_until(ws, "session.ready")
    return ws, ready["session_id"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "{key}"}, {"Authorization": "Bearer wrong"}],
    ids=["missing", "raw-key-without-bearer", "wrong-key"],
)
async def test_bad_authorization_is_refused(emulator, headers):
    headers = {k: v.format(key=emulator.api_key) for k, v in headers.items()}
    async with websockets.connect(f"{emulator.ws_url}/v1/ws", additional_headers=headers) as ws:
        messages, code, _ = await expect_close(ws)
    assert messages[0]["type"] == "session.error" and messages[0]["code"] == "unauthorized"
    assert code == 1008


def test_agent_token_endpoint_requires_bearer(emulator):
    r = httpx.get(
        f"{emulator.http_url}/v1/token",
        params={"expires_in_seconds": 60},
        headers={"Authorization": emulator.api_key},
    )
    assert r.status_code == 401
    assert agent_token(emulator)


async def test_token_works_once(emulator):
    token = agent_token(emulator)
    url = f"{emulator.ws_url}/v1/ws?token={token}"
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": SESSION}))
        assert (await recv_until(ws, "session.ready"))["session_id"].startswith("sess_")
    async with websockets.connect(url) as ws:
        messages, code, _ = await expect_close(ws)
    assert messages[0]["code"] == "unauthorized" and code == 1008
    assert emulator.state.token_reuse_attempts == 1


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"type": "input.audio", "audio": "AAAA"}, "invalid_format"),
        ({"type": "session.update", "session": {"output": {"voice": "claire"}}}, "invalid_config"),
        (
            {
                "type": "session.update",
                "session": {"tools": [{"type": "function", "function": {"name": "x"}}]},
            },
            "invalid_config",
        ),
        ({"type": "session.update", "session": {"colour": "red"}}, "invalid_config"),
        (
            {"type": "session.update", "session": {"input": {"format": {"sample_rate": 16000}}}},
            "invalid_config",
        ),
        ({"type": "session.resume", "session_id": "sess_nope"}, "session_not_found"),
    ],
)
async def test_wrong_first_message_is_a_fatal_session_error(emulator, first, code):
    async with websockets.connect(
        f"{emulator.ws_url}/v1/ws", additional_headers=bearer(emulator)
    ) as ws:
        await ws.send(json.dumps(first))
        messages, close_code, _ = await expect_close(ws)
    assert [m["code"] for m in messages] == [code]
    assert close_code == 1008


async def test_greeting_is_spoken_as_decodable_dtmf(emulator):
    emulator.set_agent_script(greeting_digits="12#")
    ws, _ = await open_session(emulator, dict(SESSION, greeting="Hello there"))
    seen: list[dict] = []
    done = await recv_until(ws, "reply.done", seen)
    await ws.close()
    started = next(m for m in seen if m["type"] == "reply.started")
    assert done == {"type": "reply.done", "reply_id": started["reply_id"], "status": "completed"}
    assert reply_digits(seen, started["reply_id"]) == "12#"
    agent = next(m for m in seen if m["type"] == "transcript.agent")
    assert agent["text"] == "Hello there" and agent["interrupted"] is False


async def test_user_digits_are_transcribed_and_echoed(emulator):
    ws, _ = await open_session(emulator)
    seen: list[dict] = []
    await speak(ws, "345")
    done = await recv_until(ws, "reply.done", seen)
    await ws.close()
    types = [m["type"] for m in seen]
    assert types.index("input.speech.started") < types.index("transcript.user.delta")
    assert types.index("input.speech.stopped") < types.index("transcript.user")
    assert [m["text"] for m in seen if m["type"] == "transcript.user.delta"] == [
        "three",
        "three four",
        "three four five",
    ]
    assert next(m for m in seen if m["type"] == "transcript.user")["text"] == "three four five"
    assert reply_digits(seen, done["reply_id"]) == "345"
    assert next(m for m in seen if m["type"] == "transcript.agent")["text"] == "three four five"
    record = emulator.state.agent_sessions()[-1]
    assert dtmf.decode_digits(record.audio(), RATE) == "345"


async def test_greeting_and_output_are_immutable_after_ready(emulator):
    ws, _ = await open_session(emulator)
    await ws.send(json.dumps({"type": "session.update", "session": {"output": {"voice": "sam"}}}))
    error = await recv_until(ws, "session.error")
    assert error["code"] == "immutable_field"
    await ws.send(json.dumps({"type": "session.update", "session": {"greeting": "Hi again"}}))
    assert (await recv_until(ws, "session.error"))["code"] == "immutable_field"
    update = {"system_prompt": "Be terse.", "input": {"turn_detection": {"min_silence": 300}}}
    await ws.send(json.dumps({"type": "session.update", "session": update}))
    assert (await recv_until(ws, "session.updated"))["type"] == "session.updated"
    await ws.send(json.dumps({"type": "input.audio", "audio": "not base64!"}))
    assert (await recv_until(ws, "session.error"))["code"] == "invalid_audio"
    await ws.send(json.dumps({"type": "session.end"}))
    messages, code, _ = await expect_close(ws)
    assert messages[-1]["type"] == "session.ended" and code == 1000


async def test_speaking_over_a_reply_interrupts_it(emulator):
    emulator.set_agent_script(reply_digits="1234567890")
    ws, _ = await open_session(emulator)
    seen: list[dict] = []
    await speak(ws, "5", trail_ms=500)
    await recv_until(ws, "reply.audio", seen)
    await speak(ws, "6", trail_ms=500)
    done = await recv_until(ws, "reply.done", seen)
    assert done["status"] == "interrupted"
    agent = next(m for m in seen if m["type"] == "transcript.agent")
    assert agent["interrupted"] is True
    await ws.close()


async def test_tool_call_then_result_shapes_the_next_reply(emulator):
    emulator.add_tool_trigger("7", "lookup_code", {"city": "Tokyo"})
    tools = [
        {
            "type": "function",
            "name": "lookup_code",
            "description": "Look up a code",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    ws, _ = await open_session(emulator, dict(SESSION, tools=tools))
    seen: list[dict] = []
    await speak(ws, "7")
    call = await recv_until(ws, "tool.call", seen)
    assert call["name"] == "lookup_code" and call["arguments"] == {"city": "Tokyo"}
    await recv_until(ws, "reply.done", seen)
    await ws.send(json.dumps({"type": "tool.result", "call_id": "call_wrong", "result": "{}"}))
    assert (await recv_until(ws, "session.error"))["code"] == "invalid_value"
    result = json.dumps({"code": "42#"})
    await ws.send(json.dumps({"type": "tool.result", "call_id": call["call_id"], "result": result}))
    after: list[dict] = []
    done = await recv_until(ws, "reply.done", after)
    assert reply_digits(after, done["reply_id"]) == "42#"
    await ws.close()


async def test_resume_after_a_drop_needs_a_new_token(emulator):
    token = agent_token(emulator)
    ws = await websockets.connect(f"{emulator.ws_url}/v1/ws?token={token}")
    await ws.send(json.dumps({"type": "session.update", "session": SESSION}))
    session_id = (await recv_until(ws, "session.ready"))["session_id"]
    assert emulator.drop(kind="agent") == 1
    with pytest.raises(websockets.ConnectionClosedError):
        await ws.recv()
    # The old token is spent: resuming with it fails.
    async with websockets.connect(f"{emulator.ws_url}/v1/ws?token={token}") as again:
        messages, _, _ = await expect_close(again)
    assert messages[0]["code"] == "unauthorized"
    fresh = agent_token(emulator)
    async with websockets.connect(f"{emulator.ws_url}/v1/ws?token={fresh}") as again:
        await again.send(json.dumps({"type": "session.resume", "session_id": session_id}))
        ready = await recv_until(again, "session.ready")
        assert ready["session_id"] == session_id
        await again.send(json.dumps({"type": "session.end"}))
        await expect_close(again)
    async with websockets.connect(
        f"{emulator.ws_url}/v1/ws", additional_headers=bearer(emulator)
    ) as late:
        await late.send(json.dumps({"type": "session.resume", "session_id": session_id}))
        messages, _, _ = await expect_close(late)
    assert messages[0]["code"] == "session_not_found"


async def test_resume_after_the_window_is_expired(emulator):
    _ws, session_id = await open_session(emulator)
    emulator.drop(kind="agent")
    await asyncio.sleep(30 * emulator.config.time_scale + 0.3)
    async with websockets.connect(
        f"{emulator.ws_url}/v1/ws", additional_headers=bearer(emulator)
    ) as again:
        await again.send(json.dumps({"type": "session.resume", "session_id": session_id}))
        messages, code, _ = await expect_close(again)
    assert messages[0]["code"] == "session_expired" and code == 1008


async def test_forced_expiry_ends_the_session(emulator):
    ws, _ = await open_session(emulator)
    assert emulator.expire_sessions(kind="agent") == 1
    messages, _, _ = await expect_close(ws)
    assert messages[-1]["code"] == "session_expired"


# --- pacing ----------------------------------------------------------------------------------


async def send_audio_now(ws, seconds: float) -> None:
    """``seconds`` of silence as 50 ms input.audio messages, all at once."""
    chunk = base64.b64encode(np.zeros(RATE // 20, dtype="<i2").tobytes()).decode()
    for _ in range(round(seconds * 20)):
        await ws.send(json.dumps({"type": "input.audio", "audio": chunk}))


async def test_audio_ahead_of_real_time_is_an_audio_rate_violation(emulator):
    ws, session_id = await open_session(emulator)
    with contextlib.suppress(websockets.ConnectionClosed):
        await send_audio_now(ws, 2.0)  # a pre-roll backlog sent in a burst
    messages, code, _ = await expect_close(ws)
    errors = [m for m in messages if m["type"] == "session.error"]
    assert [e["code"] for e in errors] == ["audio_rate_violation"] and code == 1008
    assert (
        errors[0]["message"].startswith("Received 1.")
        and " sec. audio in 0." in errors[0]["message"]
    )
    [violation] = emulator.state.violations_of("pacing", kind="agent")
    assert violation.session == session_id and violation.detail == errors[0]["message"]


async def test_agent_pacing_counts_from_session_ready(emulator):
    ws, _ = await open_session(emulator)
    await asyncio.sleep(0.8)
    await send_audio_now(ws, 1.5)  # 1.5 s of audio 0.8 s after session.ready: within the lead
    await asyncio.sleep(0.1)
    await ws.send(json.dumps({"type": "session.end"}))
    messages, code, _ = await expect_close(ws)
    assert code == 1000 and "session.error" not in [m["type"] for m in messages]
    assert emulator.state.violation_counts()["pacing"] == 0


async def test_the_loose_allowance_applies_to_the_agent(tmp_path):
    config = make_test_config(tmp_path, rate_allowance=LOOSE_RATE_ALLOWANCE)
    async with Emulator(config) as emu:
        ws, _ = await open_session(emu)
        await asyncio.sleep(0.5)
        await send_audio_now(ws, 1.7)  # 1.7 s in 0.5 s: over the strict 1.5 s, under 1.75 s
        await ws.send(json.dumps({"type": "session.end"}))
        _, code, _ = await expect_close(ws)
        assert code == 1000 and emu.state.rate_violations == 0
