"""The status page of a real daemon, in headless Chromium: state, meter, volume and mute.

The whole daemon runs on the PulseAudio test stack (PortAudio -> ALSA -> null
sinks) against the emulator, with its web page on loopback; the page is
driven as a person drives it (its token field and buttons). DTMF "speech" is
played into the microphone sink by the sound-server fixture, so the meter the
page shows is the level the daemon measured from real capture.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import dtmf
from appliance.app import Appliance
from appliance.config import Config
from appliance.events import EventBus, StateChanged
from appliance.secrets import Secret
from appliance.web.server import WebLimits
from tests.events import collect

pytestmark = pytest.mark.audio

CAPTURE_RATE = 48_000
TOKEN = "device-page-control-token-0123456789"
#: The digits below are far above this at every amplitude; the null sink's silence far below.
SPEECH_DBFS = -30.0
SILENCE_DBFS = -90.0
#: Three steps of loudness, each held longer than a few meter intervals: the meter must move.
AMPLITUDES = (0.08, 0.2, 0.5)
STEP_MS = 900

# Notes each value the Microphone card shows, tagged with the phase the test set.
LEVEL_RECORDER = """
window.__phase = 'quiet';
window.__levels = [];
const el = document.getElementById('level');
const note = () => window.__levels.push([window.__phase, el.textContent]);
new MutationObserver(note).observe(el, {subtree: true, childList: true, characterData: true});
return true;
"""


def text_of(element_id: str) -> str:
    return f"return document.getElementById('{element_id}').textContent"


def device_config(tmp_path: Path, emulator) -> Config:
    config = Config()
    config.mode = "live"
    config.state_dir = tmp_path / "state"
    config.endpoints.base_url = emulator.http_url
    config.audio.input_rate = CAPTURE_RATE
    config.button.enabled = False
    config.earcons.enabled = False
    config.upload.enabled = False
    config.api_key = Secret(emulator.api_key)
    token = tmp_path / "control-token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    config.web.enabled = True
    config.web.port = 0
    config.web.controls_enabled = True
    config.web.control_token_file = token
    return config


def stepped_speech() -> np.ndarray:
    """One long digit per amplitude, back to back: a voice getting louder."""
    parts = [
        dtmf.generate(digit, CAPTURE_RATE, tone_ms=STEP_MS, lead_ms=0, trail_ms=0, amplitude=amp)
        for digit, amp in zip("159", AMPLITUDES, strict=True)
    ]
    return np.concatenate(parts).astype(np.int16)


def dbfs_values(levels: list[list[str]], phase: str) -> list[float]:
    return [float(text.split()[0]) for p, text in levels if p == phase and text.endswith("dBFS")]


@pytest.fixture
async def daemon_page(tmp_path, emulator, pulse_server):
    config = device_config(tmp_path, emulator)
    bus = EventBus()
    app = Appliance(config, events=bus)
    runner = asyncio.create_task(app.run())
    await asyncio.wait_for(app.ready.wait(), 20)
    assert app.web is not None and app.daemon is not None
    try:
        yield app, bus, config
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0


async def test_the_status_page_shows_listening_and_a_moving_level_while_speech_plays(
    browser, daemon_page, pulse_server
):
    app, _, _ = daemon_page
    daemon = app.daemon
    assert daemon is not None and app.web is not None
    await browser.get(f"http://127.0.0.1:{app.web.port}/status")
    await browser.wait_js(f"{text_of('mode')} == 'live'", what="the mode", timeout=10)
    await browser.js(LEVEL_RECORDER)

    daemon.press("short")
    await browser.wait_js(f"{text_of('state')} == 'listening'", what="listening", timeout=20)
    await asyncio.sleep(1.0)  # listening, nothing said yet: the meter at the floor
    await browser.js("window.__phase = 'speech'")
    speech = stepped_speech()
    player = await asyncio.to_thread(pulse_server.play_into_mic, speech, CAPTURE_RATE)
    assert await asyncio.to_thread(player.wait, 20) == 0
    await asyncio.sleep(0.3)  # the last step's values reach the page
    await browser.js("window.__phase = 'after'")
    assert await browser.js(text_of("state")) == "listening"  # still, all through the speech

    daemon.press("short")
    await asyncio.wait_for(daemon.wait_idle(), 30)
    await browser.wait_js(f"{text_of('state')} == 'idle'", what="idle after the session")

    levels = await browser.js("return window.__levels")
    quiet = dbfs_values(levels, "quiet")
    assert quiet and max(quiet) < SILENCE_DBFS, quiet
    loud = [v for v in dbfs_values(levels, "speech") if v > SPEECH_DBFS]
    # Moving: the page showed each step of loudness, not one stuck value.
    assert len(set(loud)) >= len(AMPLITUDES), loud
    assert max(loud) - min(loud) > 10, loud
    bar = await browser.js("return document.getElementById('level-bar').style.width")
    assert bar.endswith("%")


async def test_the_volume_buttons_change_the_shown_and_the_kept_level_behind_the_token(
    browser, daemon_page
):
    app, _, config = daemon_page
    assert app.web is not None and app.daemon is not None
    await browser.get(f"http://127.0.0.1:{app.web.port}/status")
    await browser.wait_js(f"{text_of('volume')} == '70 %'", what="the start volume", timeout=10)
    await browser.wait_js("return !document.getElementById('controls').hidden", what="controls")
    up = "document.querySelector('#controls [data-action=volume_up]').click()"
    down = "document.querySelector('#controls [data-action=volume_down]').click()"

    await browser.js("document.getElementById('token').value = 'not-the-token'")
    await browser.js(up)
    await browser.wait_js(f"{text_of('control-result')}.startsWith('a valid bearer token')")
    assert await browser.js(text_of("volume")) == "70 %"
    assert app.daemon.status_snapshot()["volume"]["percent"] == 70

    await browser.js(f"document.getElementById('token').value = {json.dumps(TOKEN)}")
    await asyncio.sleep(WebLimits().token_miss_delay_s + 0.2)  # the miss's wait
    await browser.js(up)
    await browser.wait_js(f"{text_of('volume')} == '80 %'", what="80 % after Volume +")
    for _ in range(3):
        await browser.js(down)
        await browser.wait_js(f"{text_of('control-result')} == 'done'")
        await browser.js("document.getElementById('control-result').textContent = ''")
    await browser.wait_js(f"{text_of('volume')} == '50 %'", what="50 % after three Volume −")
    assert app.daemon.status_snapshot()["volume"] == {"percent": 50, "gain": 0.25}
    kept = json.loads((config.state_path / "controls.json").read_text())
    assert kept["volume_percent"] == 50


async def test_mute_shows_muted_and_a_start_while_muted_says_nothing_started(
    browser, daemon_page, emulator
):
    app, bus, config = daemon_page
    daemon = app.daemon
    assert app.web is not None and daemon is not None
    states = collect(bus, StateChanged)
    await browser.get(f"http://127.0.0.1:{app.web.port}/status")
    await browser.wait_js(f"{text_of('mute')} == 'on'", what="the microphone on", timeout=10)
    await browser.js(f"document.getElementById('token').value = {json.dumps(TOKEN)}")

    await browser.js("document.getElementById('mute-button').click()")
    await browser.wait_js(f"{text_of('mute')} == 'muted'", what="muted")
    assert await browser.js(text_of("mute-button")) == "Unmute"
    await browser.wait_js(f"{text_of('state')} == 'muted'", what="the muted state")

    await browser.js("document.querySelector('#controls [data-action=start_session]').click()")
    await browser.wait_js(
        f"{text_of('control-result')} == 'muted: unmute to start live transcription'",
        what="the nothing-started message",
    )
    await asyncio.sleep(0.5)  # the answer and the feed have both arrived: the message stays
    assert await browser.js(text_of("control-result")) == (
        "muted: unmute to start live transcription"
    )
    assert daemon._session is None
    assert emulator.state.streaming_sessions() == []
    assert not any(s.state in ("connecting", "listening") for s in states)
    kept = json.loads((config.state_path / "controls.json").read_text())
    assert kept["muted"] is True

    await browser.js("document.getElementById('mute-button').click()")
    await browser.wait_js(f"{text_of('mute')} == 'on'", what="unmuted again")
    await browser.wait_js(f"{text_of('state')} == 'idle'", what="idle when unmuted")
    deadline = time.monotonic() + 5
    while daemon.status_snapshot()["mute"]["muted"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert daemon.status_snapshot()["mute"]["muted_seconds"] > 0.3
