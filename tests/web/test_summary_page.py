"""The captions page shows a stored summary, once, as text (never as markup)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.config import WebConfig
from appliance.events import EventBus, SummaryStored
from appliance.web import WebServer

SUMMARIES = "[...document.querySelectorAll('#captions .summary')].map(e => e.textContent)"


@pytest.fixture
async def page_server():
    bus = EventBus()
    status: dict[str, Any] = {"mode": "live", "state": "idle", "spool": None}
    server = WebServer(WebConfig(enabled=True, port=0), bus, lambda: dict(status), None)
    await server.start()
    yield server, bus
    await server.stop()


async def test_a_session_summary_appears_under_the_captions(browser, page_server):
    server, bus = page_server
    await browser.get(f"http://127.0.0.1:{server.port}/")
    await browser.wait_js(
        "return window.document.getElementById('dot').className.includes('live')",
        what="a connected feed",
    )
    text = "Summary:\n- 12\n<b>bold</b>\n\nAction items:\n- none"
    for _ in range(2):  # published twice (a replay): shown once
        bus.publish(SummaryStored(source="session", source_id="s1", text=text, model="gpt-4.1"))
    await browser.wait_js(f"return {SUMMARIES}.length == 1", what="the summary")
    assert await browser.js(f"return {SUMMARIES}") == ["Summary of the session" + text]
    assert await browser.js("return document.querySelectorAll('#captions b').length") == 0
