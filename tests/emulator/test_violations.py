"""The record of client rules broken, as a client on the wire produces it."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.emulator.clients import expect_close, mint_streaming_token, streaming_url
from tests.fixtures.emulator import make_test_config

CLEAN = {
    "pacing": 0,
    "token_reuse": 0,
    "retry_too_soon": 0,
    "identical_retry_delays": 0,
    "ignored_retry_after": 0,
    "abandoned": 0,
}


@pytest.fixture
def emulator_config(tmp_path):
    # Sleep-based retry delays wobble by more than 1 ms on a loaded machine.
    return make_test_config(tmp_path, retry_delay_tolerance_s=0.04)


def key(emu) -> dict:
    return {"Authorization": emu.api_key}


def streaming_token(emu) -> httpx.Response:
    return httpx.get(
        f"{emu.http_url}/v3/token", params={"expires_in_seconds": 60}, headers=key(emu)
    )


def rules(emu) -> list[str]:
    return [v.rule for v in emu.state.violations]


async def test_a_well_behaved_session_breaks_no_rule(emulator):
    async with websockets.connect(
        streaming_url(emulator, token=mint_streaming_token(emulator))
    ) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    state = httpx.get(f"{emulator.http_url}/_emulator/state").json()
    assert state["violations"] == [] and state["violation_counts"] == CLEAN


async def test_a_spent_token_is_recorded(emulator):
    token = mint_streaming_token(emulator)
    async with websockets.connect(streaming_url(emulator, token=token)) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    await asyncio.sleep(0.15)
    async with websockets.connect(streaming_url(emulator, token=token)) as ws:
        _, code, _ = await expect_close(ws)
    assert code == 1008
    [violation] = emulator.state.violations
    assert (violation.rule, violation.kind) == ("token_reuse", "streaming")


async def test_a_refused_token_retried_is_reuse_and_too_soon(emulator):
    emulator.refuse_tokens(1)
    token = mint_streaming_token(emulator)
    for _ in range(2):
        async with websockets.connect(streaming_url(emulator, token=token)) as ws:
            await expect_close(ws)
    assert sorted(rules(emulator)) == ["retry_too_soon", "token_reuse"]


def test_a_token_request_right_after_a_failed_one(emulator):
    emulator.fail_http(503, count=1, path_prefix="/v3/token")
    assert streaming_token(emulator).status_code == 503
    assert streaming_token(emulator).status_code == 200
    [violation] = emulator.state.violations
    assert (violation.rule, violation.kind) == ("retry_too_soon", "streaming")
    assert violation.data["path"] == "/v3/token" and violation.data["since_failure_s"] < 0.1


async def test_a_websocket_upgrade_right_after_a_failed_token_request(emulator):
    emulator.fail_http(503, count=1, path_prefix="/v3/token")
    assert streaming_token(emulator).status_code == 503
    async with websockets.connect(streaming_url(emulator), additional_headers=key(emulator)) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    assert [(v.rule, v.data["path"]) for v in emulator.state.violations] == [
        ("retry_too_soon", "/v3/ws")
    ]


async def test_a_reconnect_right_after_a_refused_upgrade(emulator):
    wrong = {"Authorization": "wrong-key"}
    async with websockets.connect(streaming_url(emulator), additional_headers=wrong) as ws:
        _, code, _ = await expect_close(ws)
    assert code == 1008
    async with websockets.connect(streaming_url(emulator), additional_headers=key(emulator)) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    assert rules(emulator) == ["retry_too_soon"]


def test_a_request_spaced_past_the_floor_is_fine(emulator):
    emulator.fail_http(503, count=1, path_prefix="/v3/token")
    streaming_token(emulator)
    time.sleep(0.12)
    assert streaming_token(emulator).status_code == 200
    assert emulator.state.violations == []


def test_agent_and_rest_are_judged_apart_from_streaming(emulator):
    emulator.fail_http(503, count=1, path_prefix="/v3/token")
    streaming_token(emulator)
    r = httpx.get(
        f"{emulator.http_url}/v1/token",
        params={"expires_in_seconds": 60},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
    )
    assert r.status_code == 200
    assert httpx.get(f"{emulator.http_url}/v2/transcript/x", headers=key(emulator)).status_code
    assert emulator.state.violations == []


def test_fixed_retry_delays_are_identical(emulator):
    emulator.fail_http(503, count=5, path_prefix="/v2/upload")
    for _ in range(6):
        httpx.post(f"{emulator.http_url}/v2/upload", content=b"x", headers=key(emulator))
        time.sleep(0.15)
    # Five retries at a fixed 150 ms: the 4th and 5th complete a run of four.
    assert rules(emulator) == ["identical_retry_delays", "identical_retry_delays"]
    assert {v.kind for v in emulator.state.violations} == {"rest"}


def test_jittered_retry_delays_are_fine(emulator):
    emulator.fail_http(503, count=3, path_prefix="/v2/upload")
    for delay in (0.15, 0.3, 0.6, 0):
        httpx.post(f"{emulator.http_url}/v2/upload", content=b"x", headers=key(emulator))
        time.sleep(delay)
    assert emulator.state.violations == []


def test_a_request_before_retry_after_ran_out(emulator):
    emulator.fail_http(429, count=1, retry_after="1", path_prefix="/v2/upload")
    httpx.post(f"{emulator.http_url}/v2/upload", content=b"x", headers=key(emulator))
    time.sleep(0.3)
    httpx.get(f"{emulator.http_url}/v2/transcript/x", headers=key(emulator))  # same product
    time.sleep(0.8)
    httpx.get(f"{emulator.http_url}/v2/transcript/x", headers=key(emulator))
    [violation] = emulator.state.violations
    assert violation.rule == "ignored_retry_after" and violation.kind == "rest"
    assert violation.data["retry_after"] == "1"
    assert 0.5 < violation.data["early_s"] < 0.75


# --- abandoned sessions --------------------------------------------------------------------


async def test_a_streaming_session_closed_without_terminate_is_abandoned(emulator):
    async with websockets.connect(streaming_url(emulator), additional_headers=key(emulator)) as ws:
        session_id = json.loads(await ws.recv())["id"]
    assert await asyncio.to_thread(
        emulator.wait_until, lambda: emulator.state.violations_of("abandoned")
    )
    [violation] = emulator.state.violations
    assert (violation.kind, violation.session) == ("streaming", session_id)
    assert violation.data == {"close_frame": True, "close_code": 1000}
    assert "without Terminate" in violation.detail


async def test_a_session_whose_connection_dies_client_side_is_abandoned(emulator):
    ws = await websockets.connect(streaming_url(emulator), additional_headers=key(emulator))
    await ws.recv()
    ws.transport.abort()  # the client's network path went away: no close frame
    assert await asyncio.to_thread(
        emulator.wait_until, lambda: emulator.state.violations_of("abandoned")
    )
    [violation] = emulator.state.violations
    assert violation.data["close_frame"] is False
    assert "connection lost" in violation.detail


async def test_an_agent_session_closed_without_session_end_is_abandoned(emulator):
    headers = {"Authorization": f"Bearer {emulator.api_key}"}
    async with websockets.connect(f"{emulator.ws_url}/v1/ws", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {}}))
        await ws.recv()
    async with websockets.connect(f"{emulator.ws_url}/v1/ws", additional_headers=headers) as ws:
        await asyncio.sleep(0.15)
        await ws.send(json.dumps({"type": "session.update", "session": {}}))
        await ws.recv()
        await ws.send(json.dumps({"type": "session.end"}))
        await expect_close(ws)
    async with websockets.connect(f"{emulator.ws_url}/v1/ws", additional_headers=headers):
        pass  # no session.update: no session to abandon
    await asyncio.sleep(0.1)
    assert [(v.rule, v.kind) for v in emulator.state.violations] == [("abandoned", "agent")]


async def test_sessions_the_server_ends_are_not_abandoned(emulator):
    async with websockets.connect(streaming_url(emulator), additional_headers=key(emulator)) as ws:
        await ws.recv()
        emulator.drop()
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    await asyncio.sleep(0.15)
    async with websockets.connect(streaming_url(emulator), additional_headers=key(emulator)) as ws:
        await ws.recv()
        emulator.close(3005, "Session cancelled")
        await expect_close(ws)
    await asyncio.sleep(0.1)
    assert emulator.state.violations == []


def test_clear_violations_over_http(emulator):
    emulator.fail_http(503, count=1, path_prefix="/v3/token")
    streaming_token(emulator)
    streaming_token(emulator)
    base = f"{emulator.http_url}/_emulator"
    assert httpx.get(f"{base}/state").json()["violation_counts"]["retry_too_soon"] == 1
    assert httpx.post(f"{base}/clear_violations").json() == {"ok": True, "result": 1}
    streaming_token(emulator)  # the failure before the clear is forgotten too
    assert httpx.get(f"{base}/state").json()["violations"] == []
