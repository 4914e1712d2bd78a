"""The history page and its API on a real loopback socket, and in headless Chromium."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from appliance.config import WebConfig
from appliance.events import EventBus
from appliance.web import WebServer
from appliance.web.history import HistoryApi
from tests.history.helpers import SESSION_ID, device_history
from tests.history.test_archive import HOSTILE_IDS

TOKEN = "history-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "control-token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
async def history_server(tmp_path, emulator, token_file):
    archive, spool, rid = await device_history(tmp_path, emulator)
    config = WebConfig(enabled=True, port=0, control_token_file=token_file)
    api = HistoryApi(archive, list_limit=50, audio_max_bytes=10_000_000)
    server = WebServer(config, EventBus(), lambda: {"session": None}, None, history=api)
    await server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as http:
        yield server, http, rid, spool
    await server.stop()


async def test_every_history_route_needs_the_token(history_server):
    _server, http, rid, _spool = history_server
    for path in ("/api/history", f"/api/history/{SESSION_ID}", f"/api/history/{rid}/audio"):
        assert (await http.get(path)).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await http.get("/api/history", headers=wrong)).status_code == 401
    # A wrong token is throttled like one at the controls: the next try must wait.
    assert (await http.get("/api/history", headers=AUTH)).status_code == 429
    assert (await http.get("/history")).status_code == 200  # the page itself holds no data


async def test_without_a_token_file_history_is_refused_not_open(tmp_path, emulator):
    archive, _spool, _rid = await device_history(tmp_path, emulator)
    api = HistoryApi(archive, list_limit=50, audio_max_bytes=1)
    server = WebServer(WebConfig(enabled=True, port=0), EventBus(), dict, None, history=api)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            answer = await http.get("/api/history", headers=AUTH)
        assert answer.status_code == 403
        assert answer.json() == {"error": "no control token is configured"}
    finally:
        await server.stop()


async def test_the_list_and_one_item_with_its_speakers(history_server):
    _server, http, rid, _spool = history_server
    items = (await http.get("/api/history", headers=AUTH)).json()["items"]
    assert [(i["kind"], i["id"]) for i in items] == [("recording", rid), ("session", SESSION_ID)]
    detail = (await http.get(f"/api/history/{SESSION_ID}", headers=AUTH)).json()
    assert detail["transcript"]["speakers"] == ["A", "B"]
    assert detail["formats"] == ["txt", "md", "srt", "vtt", "json"]


async def test_an_export_is_a_download_with_its_type_and_name(history_server):
    _server, http, rid, spool = history_server
    answer = await http.get(f"/api/history/{rid}/vtt", headers=AUTH)
    assert answer.headers["content-type"] == "text/vtt; charset=utf-8"
    assert answer.headers["content-disposition"] == f'attachment; filename="recording-{rid}.vtt"'
    assert answer.text == spool.artifact_path(rid, "vtt").read_text()


async def test_a_recordings_audio_is_served_and_a_too_large_one_is_refused(history_server):
    server, http, rid, _spool = history_server
    answer = await http.get(f"/api/history/{rid}/audio", headers=AUTH)
    assert answer.headers["content-type"] == "audio/wav" and answer.content[:4] == b"RIFF"
    server._past.audio_max_bytes = 100
    assert (await http.get(f"/api/history/{rid}/audio", headers=AUTH)).status_code == 413


@pytest.mark.parametrize("value", HOSTILE_IDS[:6])
async def test_an_id_from_outside_never_leaves_the_archive(history_server, value):
    _server, http, _rid, _spool = history_server
    answer = await http.get(f"/api/history/{value}/txt", headers=AUTH)
    assert answer.status_code in (400, 404)
    assert "root:" not in answer.text


async def test_the_history_page_lists_opens_and_downloads_in_chromium(
    browser, history_server, tmp_path
):
    server, _http, rid, _spool = history_server
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    await asyncio.to_thread(
        browser.driver.execute_cdp_cmd,
        "Browser.setDownloadBehavior",
        {"behavior": "allow", "downloadPath": str(downloads)},
    )
    await browser.get(f"http://127.0.0.1:{server.port}/history")
    await browser.js(
        f"document.getElementById('token').value = {json.dumps(TOKEN)};"
        "document.getElementById('open').click();"
    )
    rows = "return [...document.querySelectorAll('#history-list tr[data-id]')]"
    await browser.wait_js(f"{rows}.length == 2", what="two listed items")
    assert await browser.js(f"{rows}.map(r => r.dataset.kind)") == ["recording", "session"]

    await browser.js(f"document.querySelector('tr[data-id=\"{SESSION_ID}\"]').click()")
    utterances = "[...document.querySelectorAll('#transcript .utterance')].map(p => p.textContent)"
    await browser.wait_js(f"return {utterances}.length == 2", what="the session's turns")
    assert await browser.js(f"return {utterances}") == [
        "00:00:01Speaker A:One, two.",
        "00:00:04Speaker B:Three.",
    ]
    await browser.js("document.querySelector('#downloads button[data-format=\"md\"]').click()")
    saved = downloads / f"session-{SESSION_ID}.md"
    for _ in range(100):
        if saved.exists():
            break
        await asyncio.sleep(0.05)
    assert saved.read_text().startswith(f"# Session {SESSION_ID}\n")

    await browser.js(f"document.querySelector('tr[data-id=\"{rid}\"]').click()")
    await browser.wait_js(
        "const a = document.getElementById('audio'); return !a.hidden && a.src.startsWith('blob:')",
        what="the recording's audio ready to play",
    )
    duration = await browser.wait_js(
        "const a = document.getElementById('audio'); return a.readyState >= 1 && a.duration",
        what="the audio's length known to the player",
    )
    assert duration > 1.0
