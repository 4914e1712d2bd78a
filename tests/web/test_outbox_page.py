"""The status page shows the outbox: its counts and each transcript's delivery."""

from __future__ import annotations

from typing import Any

from appliance.config import WebConfig
from appliance.events import EventBus, SpoolStatus
from appliance.web import WebServer


async def test_the_status_page_shows_pending_delivered_and_refused_transcripts(browser):
    bus = EventBus()
    status: dict[str, Any] = {"mode": "live", "state": "idle", "session": None}
    server = WebServer(WebConfig(enabled=True, port=0), bus, lambda: dict(status), None)
    await server.start()
    try:
        await browser.get(f"http://127.0.0.1:{server.port}/status")
        await browser.wait_js("return document.getElementById('mode').textContent == 'live'")
        assert await browser.js("return document.getElementById('outbox').hidden") is True
        status["outbox"] = {
            "available": True,
            "destination": "url",
            "pending": 1,
            "delivered": 1,
            "failed": 1,
            "items": [
                {"kind": "session", "id": "ab12", "state": "pending", "attempts": 2,
                 "detail": "HTTP 503"},
                {"kind": "recording", "id": "r-1", "state": "failed", "attempts": 1,
                 "detail": "refused: HTTP 422"},
                {"kind": "session", "id": "ab11", "state": "delivered", "attempts": 1,
                 "detail": ""},
            ],
        }  # fmt: skip
        bus.publish(SpoolStatus(waiting=0))
        await browser.wait_js(
            "return document.querySelectorAll('#outbox-list tr').length == 3", what="three items"
        )
        rows = await browser.js(
            "return [...document.querySelectorAll('#outbox-list tr')]"
            ".map(r => [...r.cells].map(c => c.textContent))"
        )
        assert rows == [
            ["session ab12", "pending", "2", "HTTP 503"],
            ["recording r-1", "failed", "1", "refused: HTTP 422"],
            ["session ab11", "delivered", "1", ""],
        ]
        counts = await browser.js("return document.getElementById('outbox-counts').textContent")
        assert counts == "1 pending · 1 delivered · 1 failed (to a url)"
    finally:
        await server.stop()
