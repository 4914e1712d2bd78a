"""Fault injection through Python controls and the HTTP control API."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
import websockets

from tests.emulator.clients import expect_close, streaming_url


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


async def test_stall_holds_messages_back(emulator):
    emulator.stall(0.4)
    t0 = time.monotonic()
    async with websockets.connect(
        streaming_url(emulator), additional_headers=headers(emulator)
    ) as ws:
        begin = json.loads(await ws.recv())
        waited = time.monotonic() - t0
    assert begin["type"] == "Begin"
    assert waited >= 0.3


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
