"""The pages in headless Chromium, driven by events published on the bus."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.config import WebConfig
from appliance.events import (
    EventBus,
    MicLevel,
    SessionPhase,
    SpoolStatus,
    StateChanged,
    TurnFinal,
    TurnPartial,
)
from appliance.web import WebServer

LINES = "[...document.querySelectorAll('#captions .line')].map(e => [e.className, e.textContent])"


@pytest.fixture
async def page_server():
    bus = EventBus()
    status: dict[str, Any] = {
        "mode": "live",
        "state": "idle",
        "connection": "online",
        "session": None,
        "spool": {"waiting": 0, "bytes": 0, "recordings": []},
    }
    server = WebServer(WebConfig(enabled=True, port=0), bus, lambda: dict(status), None)
    await server.start()
    yield server, bus, status
    await server.stop()


async def test_partials_are_replaced_in_place_by_the_final_line(browser, page_server):
    server, bus, _ = page_server
    await browser.get(f"http://127.0.0.1:{server.port}/")
    await browser.wait_js(
        "return window.document.getElementById('dot').className.includes('live')",
        what="a connected feed",
    )
    bus.publish(StateChanged(state="listening", mode="live"))
    bus.publish(SessionPhase(phase="started", mode="live", session_id="s1"))
    bus.publish(TurnPartial(session_id="s1", turn_order=0, text="one", speaker="A"))
    await browser.wait_js(
        f"return {LINES}.some(l => l[1].includes('one'))", what="the first partial"
    )
    assert await browser.js(f"return {LINES}") == [["line partial", "Aone"]]
    bus.publish(TurnPartial(session_id="s1", turn_order=0, text="one two", speaker="A"))
    bus.publish(TurnFinal(session_id="s1", turn_order=0, text="One, two.", speaker="A"))
    bus.publish(TurnPartial(session_id="s1", turn_order=1, text="three", speaker="B"))
    await browser.wait_js(f"return {LINES}.length == 2", what="two lines")
    assert await browser.js(f"return {LINES}") == [
        ["line final", "AOne, two."],
        ["line partial", "Bthree"],
    ]
    assert await browser.js("return document.getElementById('state').textContent") == "Listening"


async def test_a_page_opened_mid_session_shows_the_recent_lines(browser, page_server):
    server, bus, _ = page_server
    for i in range(3):
        bus.publish(TurnFinal(session_id="s1", turn_order=i, text=f"Line {i}."))
    await asyncio.sleep(0.1)
    await browser.get(f"http://127.0.0.1:{server.port}/")
    await browser.wait_js(f"return {LINES}.length == 3", what="three replayed lines")
    assert [text for _, text in await browser.js(f"return {LINES}")] == [
        "Line 0.",
        "Line 1.",
        "Line 2.",
    ]


async def test_captions_follow_the_newest_line(browser, page_server):
    server, bus, _ = page_server
    await browser.get(f"http://127.0.0.1:{server.port}/")
    await browser.wait_js("return document.getElementById('dot').className.includes('live')")
    for i in range(40):
        bus.publish(TurnFinal(session_id="s1", turn_order=i, text=f"Caption {i}."))
    await browser.wait_js(f"return {LINES}.length == 40", what="forty lines")
    at_bottom = (
        "const c = document.getElementById('captions');"
        "return c.scrollHeight - c.scrollTop - c.clientHeight < 5"
    )
    await browser.wait_js(at_bottom, what="the newest line in view")


async def test_status_page_shows_state_level_and_spooled_recordings(browser, page_server):
    server, bus, status = page_server
    await browser.get(f"http://127.0.0.1:{server.port}/status")
    await browser.wait_js("return document.getElementById('mode').textContent == 'live'")
    status.update(
        state="recording",
        session={"id": "rec-7", "mode": "record"},
        spool={
            "waiting": 2,
            "bytes": 3_500_000,
            "recordings": [
                {"id": "rec-6", "state": "uploading", "bytes": 2_000_000},
                {"id": "rec-7", "state": "recording", "bytes": 1_500_000},
            ],
        },
    )
    bus.publish(SpoolStatus(waiting=2))
    bus.publish(MicLevel(dbfs=-18.0))
    await browser.wait_js(
        "return document.querySelectorAll('#spool-list tr[data-id]').length == 2",
        what="two spooled recordings",
    )
    rows = await browser.js(
        "return [...document.querySelectorAll('#spool-list tr')].map(r => r.cells[1].textContent)"
    )
    assert rows == ["uploading", "recording"]
    await browser.wait_js("return document.getElementById('level').textContent == '-18 dBFS'")
    assert await browser.js("return document.getElementById('state').textContent") == "recording"
    assert "rec-7" in await browser.js("return document.getElementById('session').textContent")
    assert await browser.js("return document.getElementById('controls').hidden") is True
