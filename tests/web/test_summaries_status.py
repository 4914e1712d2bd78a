"""The status snapshot and page show the summaries: counts by state and the failed ones to retry."""

from __future__ import annotations

from typing import Any

from appliance.config import WebConfig
from appliance.events import EventBus, SummaryStored
from appliance.summary import jobs as sj
from appliance.web import WebServer
from appliance.web.snapshot import summaries_section


def test_summaries_section_counts_each_state_and_names_the_failed_ones(tmp_path):
    jobs = sj.SummaryJobs(tmp_path / "spool.db")
    try:
        for sid in ("aa", "bb", "cc"):
            jobs.add("session", sid)
        jobs.move(jobs.get("session", "bb"), sj.PENDING, sj.COMPLETED)
        unknown = f"{sj.UNKNOWN_OUTCOME}: timed out"
        jobs.move(jobs.get("session", "cc"), sj.PENDING, sj.FAILED, attempts=1, last_error=unknown)
        section = summaries_section(jobs)
    finally:
        jobs.close()
    assert section == {
        "available": True,
        "pending": 1,
        "requesting": 0,
        "completed": 1,
        "failed": 1,
        "skipped": 0,
        "failed_items": [{"kind": "session", "id": "cc", "attempts": 1, "detail": unknown}],
    }


async def test_the_status_page_shows_summary_counts_and_refreshes_when_one_is_made(browser):
    bus = EventBus()
    status: dict[str, Any] = {"mode": "live", "state": "idle", "session": None}
    server = WebServer(WebConfig(enabled=True, port=0), bus, lambda: dict(status), None)
    await server.start()
    try:
        await browser.get(f"http://127.0.0.1:{server.port}/status")
        await browser.wait_js("return document.getElementById('mode').textContent == 'live'")
        assert await browser.js("return document.getElementById('summaries').hidden") is True
        status["summaries"] = {
            "available": True, "pending": 0, "requesting": 0, "completed": 2, "failed": 1,
            "skipped": 0,
            "failed_items": [
                {"kind": "recording", "id": "r-1", "attempts": 1,
                 "detail": "summary outcome unknown: timed out"},
            ],
        }  # fmt: skip
        bus.publish(SummaryStored(source="session", source_id="ab", text="-", model="m"))
        await browser.wait_js(
            "return document.querySelectorAll('#summary-failed tr').length == 1", what="a row"
        )
        row = await browser.js(
            "return [...document.querySelector('#summary-failed tr').cells].map(c => c.textContent)"
        )
        assert row == ["recording r-1", "1", "summary outcome unknown: timed out"]
        counts = await browser.js("return document.getElementById('summary-counts').textContent")
        assert counts == "0 waiting · 2 made · 1 failed · 0 with nothing said"
        assert await browser.js("return document.getElementById('summary-hint').hidden") is False
    finally:
        await server.stop()


async def test_the_status_page_says_why_no_summary_can_be_made(browser):
    bus = EventBus()
    problem = "summaries need the API key on the device"
    status = {"mode": "live", "summaries": {"available": False, "problem": problem}}
    server = WebServer(WebConfig(enabled=True, port=0), bus, lambda: dict(status), None)
    await server.start()
    try:
        await browser.get(f"http://127.0.0.1:{server.port}/status")
        await browser.wait_js(
            "return document.getElementById('summary-counts').textContent != ''", what="counts"
        )
        text = await browser.js("return document.getElementById('summary-counts').textContent")
        assert text == problem
    finally:
        await server.stop()
