"""The web server on a real loopback socket: pages, status, feed, controls, limits."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from appliance.config import WebConfig
from appliance.events import ErrorReported, EventBus, MicLevel, SpoolStatus, TurnFinal, TurnPartial
from appliance.web import WebLimits, WebServer

TOKEN = "web-test-control-token-0123456789"
STEP = 2.0  # bound on every single wait in these tests


class Daemon:
    """Stands in for the daemon's two callbacks and records what the page asked for."""

    def __init__(self) -> None:
        self.state = {"mode": "live", "state": "idle", "connection": "online", "session": None}
        self.controls: list[tuple[str, dict[str, str]]] = []
        self.status_calls = 0

    def status(self) -> dict[str, Any]:
        self.status_calls += 1
        return dict(self.state)

    async def control(self, action: str, args: dict[str, str]) -> dict[str, Any]:
        self.controls.append((action, args))
        if action == "switch_mode" and args.get("mode") == "bogus":
            raise ValueError("unknown mode 'bogus'")
        return {"ok": True, "action": action}


@pytest.fixture
def daemon() -> Daemon:
    return Daemon()


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "control-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


async def started(bus, daemon, *, controls=False, token_file=None, limits=None) -> WebServer:
    config = WebConfig(
        enabled=True,
        host="127.0.0.1",
        port=0,
        controls_enabled=controls,
        control_token_file=token_file,
    )
    server = WebServer(config, bus, daemon.status, daemon.control, limits=limits)
    await server.start()
    return server


@pytest.fixture
async def bus() -> EventBus:
    return EventBus()


@pytest.fixture
async def server(bus, daemon):
    server = await started(bus, daemon)
    yield server
    await server.stop()


@pytest.fixture
async def control_server(bus, daemon, token_file):
    server = await started(bus, daemon, controls=True, token_file=token_file)
    yield server
    await server.stop()


def base(server: WebServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def receive(ws) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), STEP))


async def receive_until(ws, kind: str) -> dict[str, Any]:
    while True:
        message = await receive(ws)
        if message["kind"] == kind:
            return message


# -- pages and status ---------------------------------------------------------


async def test_captions_and_status_pages_are_self_contained_html(server):
    async with httpx.AsyncClient(base_url=base(server), timeout=STEP) as client:
        for path in ("/", "/status"):
            answer = await client.get(path)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/html")
            assert "default-src 'none'" in answer.headers["content-security-policy"]
            page = answer.text
            assert "<script>" in page and "<style>" in page
            for external in ("http://", "https://", "<link", "src=", "@import", "url("):
                assert external not in page, f"{path} refers to an external asset: {external}"


async def test_status_api_returns_the_daemon_snapshot_and_recent_errors(server, bus, daemon):
    bus.publish(ErrorReported(message="upload failed: 503", where="upload"))
    await asyncio.sleep(0.05)  # let the history task see it
    async with httpx.AsyncClient(base_url=base(server), timeout=STEP) as client:
        status = (await client.get("/api/status")).json()
    assert status["mode"] == "live" and status["state"] == "idle"
    assert status["controls"] is False
    assert status["errors"][-1]["message"] == "upload failed: 503"


async def test_a_failing_status_callback_does_not_break_the_page(bus):
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    server = WebServer(WebConfig(enabled=True, port=0), bus, broken, None)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=base(server), timeout=STEP) as client:
            answer = await client.get("/api/status")
        assert answer.status_code == 200
        assert answer.json()["state"] == "unknown"
    finally:
        await server.stop()


async def test_unknown_path_is_404_and_other_methods_405(server):
    async with httpx.AsyncClient(base_url=base(server), timeout=STEP) as client:
        assert (await client.get("/nope")).status_code == 404
        assert (await client.post("/")).status_code == 405


async def test_foreign_host_name_is_refused(server):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends its own Host."""
    async with httpx.AsyncClient(base_url=base(server), timeout=STEP) as client:
        answer = await client.get("/api/status", headers={"Host": "evil.example"})
    assert answer.status_code == 421


# -- the feed -----------------------------------------------------------------


async def test_feed_replays_recent_captions_then_streams_new_ones(server, bus):
    bus.publish(TurnFinal(session_id="s1", turn_order=0, text="One two."))
    await asyncio.sleep(0.05)
    async with connect(f"ws://127.0.0.1:{server.port}/feed?kinds=turn.,state") as ws:
        hello = await receive(ws)
        assert hello["kind"] == "hello"
        assert [m["data"]["text"] for m in hello["data"]["recent"]] == ["One two."]
        words = ({"text": "three"},)
        bus.publish(TurnPartial(session_id="s1", turn_order=1, text="three", words=words))
        bus.publish(MicLevel(dbfs=-20.0))  # not asked for
        bus.publish(TurnFinal(session_id="s1", turn_order=1, text="Three."))
        partial, final = await receive(ws), await receive(ws)
    assert partial["kind"] == "turn.partial"
    expected = {"session_id": "s1", "turn_order": 1, "text": "three", "speaker": None}
    assert partial["data"] == expected  # words left out
    assert final["kind"] == "turn.final" and final["data"]["text"] == "Three."


async def test_status_page_feed_gets_a_fresh_snapshot_when_state_changes(server, bus, daemon):
    async with connect(f"ws://127.0.0.1:{server.port}/feed?status=1") as ws:
        hello = await receive(ws)
        assert hello["data"]["status"]["state"] == "idle"
        daemon.state["state"] = "listening"
        daemon.state["spool"] = {"waiting": 1, "recordings": [{"id": "r1", "state": "queued"}]}
        bus.publish(SpoolStatus(waiting=1))
        status = await receive_until(ws, "status")
    assert status["data"]["state"] == "listening"
    assert status["data"]["spool"]["recordings"][0]["state"] == "queued"


async def test_level_events_are_throttled_per_page(bus, daemon):
    server = await started(bus, daemon, limits=WebLimits(level_interval_s=0.2))
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/feed?kinds=level") as ws:
            await receive(ws)  # hello
            for i in range(40):  # 40 readings in about 0.4 s
                bus.publish(MicLevel(dbfs=-float(i)))
                await asyncio.sleep(0.01)
            bus.publish(MicLevel(dbfs=-99.0))
            levels = []
            while not levels or levels[-1] != -99.0:
                levels.append((await receive(ws))["data"]["dbfs"])
        # At most one per 0.2 s plus the first: far fewer than 41; the newest is never lost.
        assert 2 <= len(levels) <= 6
        assert levels[-1] == -99.0
    finally:
        await server.stop()


async def test_cross_origin_feed_is_refused(server):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{server.port}/feed", origin="http://evil.example"):
            pass
    assert refused.value.response.status_code == 403


async def test_feed_client_count_is_bounded(bus, daemon):
    server = await started(bus, daemon, limits=WebLimits(max_feed_clients=1))
    try:
        async with connect(f"ws://127.0.0.1:{server.port}/feed") as first:
            await receive(first)
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{server.port}/feed"):
                    pass
            assert refused.value.response.status_code == 503
        # The slot is given back when a page goes away.
        for _ in range(50):
            if server._feed_clients == 0:
                break
            await asyncio.sleep(0.02)
        async with connect(f"ws://127.0.0.1:{server.port}/feed") as again:
            assert (await receive(again))["kind"] == "hello"
    finally:
        await server.stop()


async def test_closed_page_releases_its_subscription(server, bus):
    async with connect(f"ws://127.0.0.1:{server.port}/feed") as ws:
        await receive(ws)
        assert len(bus._subscribers) == 2  # the history keeper and this page
    for _ in range(50):
        if len(bus._subscribers) == 1:
            break
        await asyncio.sleep(0.02)
    assert len(bus._subscribers) == 1


async def test_stop_closes_open_feeds_and_the_port(bus, daemon):
    server = await started(bus, daemon)
    port = server.port
    async with connect(f"ws://127.0.0.1:{port}/feed") as ws:
        await receive(ws)
        await asyncio.wait_for(server.stop(), STEP)
        await asyncio.wait_for(ws.wait_closed(), STEP)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=STEP) as client:
            await client.get(f"http://127.0.0.1:{port}/")


# -- controls -----------------------------------------------------------------


async def test_control_without_token_is_refused_and_logged_without_it(
    control_server, daemon, caplog
):
    url = f"{base(control_server)}/api/control/start_session"
    with caplog.at_level(logging.WARNING, logger="appliance.web"):
        async with httpx.AsyncClient(timeout=STEP) as client:
            missing = await client.post(url)
            wrong = await client.post(url, headers={"Authorization": "Bearer not-the-token-000"})
    assert missing.status_code == 401 and wrong.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert daemon.controls == []
    assert "refused web control 'start_session'" in caplog.text
    assert "no bearer token" in caplog.text and "wrong token" in caplog.text
    assert "not-the-token-000" not in caplog.text and TOKEN not in caplog.text


async def test_control_with_token_reaches_the_daemon(control_server, daemon, caplog):
    url = f"{base(control_server)}/api/control/switch_mode?mode=agent"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient(timeout=STEP) as client:
            answer = await client.post(url, headers=auth)
            bad = await client.post(url.replace("agent", "bogus"), headers=auth)
            unknown = await client.post(f"{base(control_server)}/api/control/reboot", headers=auth)
    assert answer.status_code == 200 and answer.json()["action"] == "switch_mode"
    assert daemon.controls[0] == ("switch_mode", {"mode": "agent"})
    assert bad.status_code == 400 and "bogus" in bad.json()["error"]
    assert unknown.status_code == 404
    assert TOKEN not in caplog.text


async def test_control_by_get_is_not_allowed(control_server, daemon):
    async with httpx.AsyncClient(timeout=STEP) as client:
        answer = await client.get(
            f"{base(control_server)}/api/control/stop_session",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 405
    assert daemon.controls == []


async def test_controls_are_off_by_default_even_with_the_token(server, daemon, token_file):
    async with httpx.AsyncClient(timeout=STEP) as client:
        answer = await client.post(
            f"{base(server)}/api/control/start_session",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    assert answer.status_code == 403
    assert daemon.controls == []


async def test_status_says_whether_controls_are_available(control_server):
    async with httpx.AsyncClient(base_url=base(control_server), timeout=STEP) as client:
        assert (await client.get("/api/status")).json()["controls"] is True


async def test_stop_does_not_wait_for_idle_sockets(bus, daemon):
    """Browsers open spare connections that never send a request; shutdown must not
    wait for the request timeout (5 s) on them."""
    server = await started(bus, daemon)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await asyncio.sleep(0.05)
    await asyncio.wait_for(server.stop(), STEP)
    assert await asyncio.wait_for(reader.read(), STEP) == b""
    writer.close()
