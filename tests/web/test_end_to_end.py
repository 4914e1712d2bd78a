"""End to end: DTMF "speech" streamed through the emulator, watched in headless Chromium.

A 48 kHz capture ring is fed DTMF digits at real-time pace; LiveTranscription
streams them to the local emulator, which answers with partial and final
turns; the web server carries its events to the captions page and the status
page, open in two tabs of one browser. A recorder injected into the captions
page notes every line change, so the test sees the digits arrive as partials
and then settle as a final line. A field recording in a real spool shows up
on the status page; a control request without the token is refused.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from appliance import dtmf
from appliance import events as ev
from appliance.audio.ring import RingBuffer
from appliance.cloud.tokens import MintedTokens
from appliance.config import Config, WebConfig
from appliance.emulator.recognizer import digits_of
from appliance.live import LiveTranscription
from appliance.secrets import Secret
from appliance.spool.spool import Spool, SpoolParams
from appliance.web import WebServer
from appliance.web.snapshot import spool_section
from tests.live.helpers import CAPTURE_RATE, Feeder

DIGITS = "1234 5678"

# Records each caption line's class and text whenever the page changes it.
RECORDER = """
window.__changes = [];
const note = () => document.querySelectorAll('#captions .line').forEach(l => {
  const t = l.querySelector('.text').textContent, last = window.__changes.at(-1);
  const entry = [l.dataset.key, l.className, t];
  if (!window.__changes.some(c => c[0] == entry[0] && c[1] == entry[1] && c[2] == entry[2]))
    window.__changes.push(entry);
});
new MutationObserver(note).observe(document.getElementById('captions'),
  {subtree: true, childList: true, characterData: true, attributes: true});
return true;
"""


async def test_spoken_digits_appear_as_partials_then_a_final_line(emulator, browser, tmp_path):
    config = Config()
    config.endpoints.base_url = emulator.http_url
    config.state_dir = tmp_path / "state"
    bus = ev.EventBus()
    spool = Spool(SpoolParams(directory=tmp_path / "spool"), bus)
    token_file = tmp_path / "control-token"
    token_file.write_text("end-to-end-control-token-42")
    token_file.chmod(0o600)

    def status() -> dict[str, Any]:
        return {"mode": "live", "connection": "online", "spool": spool_section(spool)}

    async def control(action: str, args: dict[str, str]) -> dict[str, Any]:
        raise AssertionError("no control may get through without the token")

    web = WebServer(
        WebConfig(enabled=True, port=0, controls_enabled=True, control_token_file=token_file),
        bus,
        status,
        control,
    )
    await web.start()
    feeder = None
    try:
        base = f"http://127.0.0.1:{web.port}"
        # Tab 1: status. Tab 2: captions, with the change recorder.
        await browser.get(f"{base}/status")
        status_tab = browser.driver.current_window_handle
        await browser.wait_js("return document.getElementById('feed').className == ''")
        await asyncio.to_thread(browser.driver.switch_to.new_window, "tab")
        await browser.get(f"{base}/")
        captions_tab = browser.driver.current_window_handle
        await browser.wait_js("return document.getElementById('dot').className.includes('live')")
        await browser.js(RECORDER)

        # A field recording waits in the spool.
        writer = spool.open_recording("record", 16_000)
        writer.write(dtmf.generate("9", 16_000, lead_ms=100, trail_ms=100))
        recording_id = writer.close()
        spool.publish_status()

        # Speak the digits into the ring; the live session streams them to the emulator.
        ring = RingBuffer(CAPTURE_RATE, 10.0)
        tokens = MintedTokens.streaming(
            config.urls.streaming_token_url, Secret(emulator.api_key), expires_in_seconds=60
        )
        live = LiveTranscription.from_config(config, ring, tokens, spool, bus, config.state_path)
        feeder = Feeder(ring, dtmf.generate(DIGITS, CAPTURE_RATE, lead_ms=300, trail_ms=1500))
        feeder.start()
        session = asyncio.create_task(live.run(0))

        # The status page shows the running session and the spooled recording.
        await asyncio.to_thread(browser.driver.switch_to.window, status_tab)
        await browser.wait_js(
            "return document.getElementById('session').textContent.includes(arguments[0])",
            live.session_id,
            timeout=10,
            what="the running session",
        )
        await browser.wait_js(
            "return [...document.querySelectorAll('#spool-list tr')]"
            ".some(r => r.dataset.id == arguments[0] && r.cells[1].textContent == 'ready')",
            recording_id,
            what="the spooled recording",
        )
        await browser.screenshot("status.png")

        # The captions page saw the digits as partials, then as final lines.
        await asyncio.to_thread(browser.driver.switch_to.window, captions_tab)
        want = DIGITS.replace(" ", "")
        final_text = (
            "return [...document.querySelectorAll('#captions .line.final .text')]"
            ".map(e => e.textContent).join(' ')"
        )
        while not feeder.done.is_set():
            await asyncio.sleep(0.05)
        live.request_stop()
        await asyncio.wait_for(session, 30)
        finals = ""
        deadline = asyncio.get_running_loop().time() + 10
        while digits_of(finals) != want and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            finals = await browser.js(final_text)
        changes = await browser.js("return window.__changes")
        await browser.screenshot("captions.png")
        # Every spoken digit is on screen, once, in order, in final lines.
        assert digits_of(finals) == want, finals
        assert "".join(digits_of(t.text) for t in live.turns if t.final) == want
        # Each final line was a partial first, growing in place (same key, same element).
        partial_keys = {key for key, cls, text in changes if cls == "line partial" and text}
        final_keys = {key for key, cls, _ in changes if cls == "line final"}
        assert final_keys and final_keys <= partial_keys
        first_final = next(i for i, c in enumerate(changes) if c[1] == "line final")
        assert any(digits_of(c[2]) for c in changes[:first_final] if c[1] == "line partial")
        lines = await browser.js("return document.querySelectorAll('#captions .line').length")
        assert lines == len(final_keys)  # no leftover partial lines

        # A control without the token is refused, and the daemon never hears of it.
        async with httpx.AsyncClient(timeout=5) as client:
            refused = await client.post(f"{base}/api/control/stop_session")
        assert refused.status_code == 401
    finally:
        if feeder is not None:
            feeder.halt.set()
        await web.stop()
        spool.close()
