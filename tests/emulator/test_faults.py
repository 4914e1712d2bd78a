"""Fault injection through Python controls and the HTTP control API."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from appliance import dtmf
from tests.emulator.clients import expect_close, stream_audio, streaming_url


def headers(emu) -> dict:
    return {"Authorization": emu.api_key}


async def test_drop_current_session_without_close_frame(emulator):
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:
        await ws.recv()
        assert emulator.drop() == 1
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await ws.recv()
    assert info.value.rcvd is None  # no close frame came
    assert emulator.state.streaming_sessions()[-1].close_code == 1006


async def test_close_next_session_with_a_chosen_code(emulator):
    emulator.close(3005, "Session cancelled", target="next", kind="streaming")
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:
        messages, code, reason = await expect_close(ws)
    assert [m["type"] for m in messages] == ["Begin", "Error"]
    assert messages[1]["error_code"] == 3005
    assert (code, reason) == (3005, "Session cancelled")


async def test_close_reason_is_cut_at_123_bytes(emulator):
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:
        await ws.recv()
        emulator.close(3005, "é" * 100)
        _, code, reason = await expect_close(ws)
    assert code == 3005
    assert len(reason.encode()) <= 123 and reason == "é" * 61


async def test_stall_answers_nothing_then_resets(emulator):
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator), ping_interval=None
    ) as ws:
        await ws.recv()
        t0 = time.monotonic()
        assert emulator.stall(0.8, kind="streaming") == 1
        await ws.send(json.dumps({"type": "ForceEndpoint"}))
        pong = await ws.ping()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(pong), 0.5)
        with pytest.raises(websockets.ConnectionClosedError) as info:
            await ws.recv()
        waited = time.monotonic() - t0
    assert info.value.rcvd is None  # reset, no close frame
    assert 0.7 <= waited < 3.0
    record = emulator.state.streaming_sessions()[-1]
    assert (record.close_code, record.close_reason) == (1006, "reset after a stall")
    assert emulator.state.violation_counts()["abandoned"] == 0  # the server hung up


async def test_stall_without_reset_holds_everything_back_then_answers(emulator):
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator), ping_interval=None
    ) as ws:
        await ws.recv()
        t0 = time.monotonic()
        emulator.stall(0.6, reset=False)
        pong = await ws.ping()
        await ws.send(json.dumps({"type": "Terminate"}))
        await pong
        pong_after = time.monotonic() - t0
        messages, code, _ = await expect_close(ws)
    assert pong_after >= 0.5
    assert messages[-1]["type"] == "Termination" and code == 1000


async def test_stall_the_next_agent_session_over_http(emulator):
    r = httpx.post(
        f"{emulator.http_url}/_emulator/stall",
        json={"seconds": 0.5, "kind": "agent", "target": "next"},
    )
    assert r.json() == {"ok": True, "result": 0}
    async with websockets.connect(
        f"{emulator.ws_url}/v1/ws",
        additional_headers={"Authorization": f"Bearer {emulator.api_key}"},
        ping_interval=None,
    ) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {}}))
        assert json.loads(await ws.recv())["type"] == "session.ready"
        await asyncio.sleep(0.05)
        await ws.send(json.dumps({"type": "session.update", "session": {"system_prompt": "x"}}))
        with pytest.raises(websockets.ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 3)
    assert [m["type"] for m in emulator.state.agent_sessions()[-1].sent()] == ["session.ready"]


@pytest.mark.parametrize("mode", ["invalid_json", "unknown_type"])
async def test_garbled_messages(emulator, mode):
    emulator.garble(count=1, mode=mode)
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:
        first = await ws.recv()
        if mode == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(first)
        else:
            assert json.loads(first)["type"] == "EmulatorUnknownEvent"
            assert json.loads(await ws.recv())["type"] == "Begin"


async def test_deeply_nested_frame_before_the_next_agent_message(emulator):
    emulator.garble(mode="deep_nesting", kind="agent")
    async with websockets.connect(
        f"{emulator.ws_url}/v1/ws",
        additional_headers={"Authorization": f"Bearer {emulator.api_key}"},
    ) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {}}))
        nested = await ws.recv()
        with pytest.raises(RecursionError):
            json.loads(nested)
        assert len(nested) == 2 * emulator.config.garble_nesting_depth
        assert json.loads(await ws.recv())["type"] == "session.ready"


async def test_huge_string_frame_fits_the_clients_limit(emulator):
    emulator.garble(mode="huge_string")
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:  # websockets' default max_size is 2**20, like the daemon's
        huge = json.loads(await ws.recv())
        assert json.loads(await ws.recv())["type"] == "Begin"
    assert len(huge["text"]) == emulator.config.garble_string_chars == 900_000


@pytest.mark.parametrize(("mode", "check"), [("nan", math.isnan), ("infinity", math.isinf)])
async def test_bad_word_times_in_a_copy_of_the_next_turn(emulator, mode, check):
    emulator.garble(mode=mode, kind="streaming")
    audio = dtmf.generate("1", 16000, lead_ms=100, trail_ms=100)
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"  # no words: not garbled
        await stream_audio(ws, audio, 16000)
        await ws.send(json.dumps({"type": "ForceEndpoint"}))
        frames = []
        while len([f for f in frames if f.get("type") == "Turn"]) < 2:
            frames.append(json.loads(await ws.recv()))
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    bad, real = [f for f in frames if f["type"] == "Turn"][:2]
    assert bad["transcript"] == real["transcript"] == "one"
    assert check(bad["words"][0]["start"]) and check(bad["words"][0]["end"])
    assert real["words"][0]["start"] == pytest.approx(100, abs=25)


def test_unknown_garble_mode_is_refused(emulator):
    r = httpx.post(f"{emulator.http_url}/_emulator/garble", json={"mode": "sideways"})
    assert r.status_code == 400 and "deep_nesting" in r.json()["error"]


@pytest.mark.parametrize("path", ["/v3/token", "/v1/token"])
@pytest.mark.parametrize(
    "retry_after", ["-5", "0", "3", "1e9", "inf", "Wed, 21 Oct 2065 07:28:00 GMT"]
)
def test_token_endpoints_answer_429_with_the_retry_after_given(emulator, path, retry_after):
    emulator.fail_http(429, count=1, retry_after=retry_after, path_prefix=path)
    auth = emulator.api_key if path == "/v3/token" else f"Bearer {emulator.api_key}"
    url = f"{emulator.http_url}{path}"
    r = httpx.get(url, params={"expires_in_seconds": 60}, headers={"Authorization": auth})
    assert r.status_code == 429
    assert r.headers["Retry-After"] == retry_after
    assert r.json() == {"error": "Too many requests"}
    assert emulator.state.tokens_issued == 0
    time.sleep(0.15)  # past the 100 ms floor; short of a sane Retry-After of 3 s
    r = httpx.get(url, params={"expires_in_seconds": 60}, headers={"Authorization": auth})
    assert r.status_code == 200 and emulator.state.tokens_issued == 1
    counts = emulator.state.violation_counts()
    assert counts["retry_too_soon"] == 0
    # Only a sane wait is enforced: -5, 0 ask for none; 1e9, inf, 2065 are the client's to cap.
    assert counts["ignored_retry_after"] == (1 if retry_after == "3" else 0)


def test_fail_http_takes_numbers_and_no_retry_after_for_5xx(emulator):
    emulator.fail_http(503, count=1, path_prefix="/v1/token")
    emulator.fail_http(429, count=1, retry_after=7, path_prefix="/v3/token")
    r = httpx.get(f"{emulator.http_url}/v1/token", params={"expires_in_seconds": 60})
    assert r.status_code == 503 and "Retry-After" not in r.headers
    r = httpx.get(f"{emulator.http_url}/v3/token", params={"expires_in_seconds": 60})
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"


async def test_a_websocket_upgrade_is_refused_only_when_named(emulator):
    emulator.fail_http(503, count=1)  # no path: API calls only, never an upgrade
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    emulator.reset_faults()
    emulator.fail_http(429, count=1, retry_after="2", path_prefix="/v3/ws")
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(
            streaming_url(emulator), additional_headers=headers(emulator)
        ):
            pass
    assert info.value.response.status_code == 429
    assert info.value.response.headers["Retry-After"] == "2"


async def test_network_down_refuses_websocket_connections(emulator):
    emulator.network_down(0.3)
    with pytest.raises((OSError, websockets.InvalidHandshake, EOFError)):
        async with websockets.connect(
            streaming_url(emulator), additional_headers=headers(emulator), open_timeout=2
        ):
            pass
    await asyncio.sleep(0.35)
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"


def test_http_control_api(emulator):
    base = f"{emulator.http_url}/_emulator"
    r = httpx.post(f"{base}/fail_http", json={"status": 429, "count": 1, "retry_after": 7})
    assert r.json() == {"ok": True, "result": None}
    r = httpx.get(f"{emulator.http_url}/v2/transcript/x", headers=headers(emulator))
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert httpx.post(f"{base}/no_such_thing", json={}).status_code == 404
    assert httpx.post(f"{base}/fail_http", json={"bogus": 1}).status_code == 400
    state = httpx.get(f"{base}/state").json()
    assert state["counters"]["http_429_injected"] == 1
    assert httpx.post(f"{base}/reset_faults").json()["ok"] is True


def test_cli_serves_on_the_given_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance.emulator.cli", "--port", str(port), "--api-key", "k1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "emulator on" in proc.stdout.readline()
        r = httpx.get(
            f"http://127.0.0.1:{port}/v3/token",
            params={"expires_in_seconds": 5},
            headers={"Authorization": "k1"},
        )
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
