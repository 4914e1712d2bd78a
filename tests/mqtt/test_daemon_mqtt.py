"""The whole daemon with MQTT on: a live session seen and driven from a real Mosquitto.

The microphone is a paced DTMF WAV, the cloud the emulator on loopback, the
broker Debian's mosquitto, watched with ``mosquitto_sub`` and commanded with
``mosquitto_pub`` as the README tells an owner to check it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from pathlib import Path

from appliance import dtmf
from appliance.app import Appliance
from appliance.config import Config
from appliance.demo import words_to_digits
from appliance.events import EventBus, TurnFinal
from appliance.secrets import Secret
from tests.events import collect

from .conftest import DEVICE_PASSWORD, Broker
from .helpers import settings_for, watching

RATE = 48000


def mic_file(tmp_path: Path, digits: str, lead_s: float) -> Path:
    path = tmp_path / "mic.wav"
    audio = dtmf.generate(digits, RATE, lead_ms=int(lead_s * 1000), trail_ms=3000)
    dtmf.write_wav(path, audio, RATE)
    return path


def mqtt_daemon_config(tmp_path: Path, emulator, broker: Broker, mic: Path) -> Config:
    config = Config()
    config.mode = "live"
    config.state_dir = tmp_path / "state"
    config.endpoints.base_url = emulator.http_url
    config.audio.source = "file"
    config.audio.input_file = mic
    config.audio.sink = "none"
    config.button.enabled = False
    config.api_key = Secret(emulator.api_key)
    config.mqtt = settings_for(broker, base_topic=None, level_interval_seconds=1.0)
    config.mqtt_password = Secret(DEVICE_PASSWORD)
    return config


async def started(config: Config, events: EventBus) -> tuple[Appliance, asyncio.Task[int]]:
    app = Appliance(config, events=events)
    runner = asyncio.create_task(app.run())
    await asyncio.wait_for(app.ready.wait(), 20)
    assert app.mqtt is not None
    await asyncio.wait_for(app.mqtt.connected.wait(), 10)
    return app, runner


async def wait_until(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def mosquitto_pub(broker: Broker, topic: str, payload: str) -> None:
    cmd = ["mosquitto_pub", *broker.cli_args(), "-q", "1", "-t", topic, "-m", payload]
    subprocess.run(cmd, check=True, timeout=10)


async def test_a_live_session_started_and_stopped_over_mqtt_shows_state_turns_and_account(
    tmp_path, emulator, broker
):
    config = mqtt_daemon_config(tmp_path, emulator, broker, mic_file(tmp_path, "4 7 1", 3.0))
    events = EventBus()
    finals = collect(events, TurnFinal)
    sub = subprocess.Popen(
        ["mosquitto_sub", *broker.cli_args(), "-t", "homeassistant/#", "-t", "appliance/#", "-v"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        app, runner = await started(config, events)
        base = app.mqtt.topics.base
        assert base == f"appliance/{(config.state_path / 'device-id').read_text().strip()}"
        await asyncio.to_thread(mosquitto_pub, broker, f"{base}/cmd/start", "PRESS")
        await wait_until(lambda: "".join(words_to_digits(e.text) for e in finals) == "471", 20)
        await asyncio.to_thread(mosquitto_pub, broker, f"{base}/cmd/stop", "PRESS")
        await asyncio.wait_for(app.daemon.wait_idle(), 20)
        await asyncio.sleep(0.5)
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0
    finally:
        sub.terminate()
        out, _ = sub.communicate(timeout=5)
    lines = [line.split(" ", 1) for line in out.splitlines() if " " in line]
    on = lambda topic: [payload for t, payload in lines if t == topic]  # noqa: E731

    discovery = [t for t, _ in lines if t.startswith("homeassistant/") and t.endswith("/config")]
    assert len(set(discovery)) == 13
    states = [json.loads(p)["state"] for p in on(f"{base}/state")]
    assert states[0] == "idle" and "listening" in states and states[-1] == "idle"
    turns = [json.loads(p) for p in on(f"{base}/event/turn")]
    assert "".join(words_to_digits(t["text"]) for t in turns) == "471"
    (account,) = [json.loads(p) for p in on(f"{base}/event/account")]
    assert account["mode"] == "live" and account["account"]["lost_samples"] == 0
    results = [json.loads(p) for p in on(f"{base}/result")]
    assert [(r["command"], r["ok"]) for r in results] == [("start", True), ("stop", True)]
    assert on(f"{base}/availability")[-1] == "offline"
    assert on(f"{base}/level")  # the microphone level, rate-limited


async def test_a_broker_killed_mid_session_loses_no_audio_and_no_turn(tmp_path, emulator, broker):
    config = mqtt_daemon_config(tmp_path, emulator, broker, mic_file(tmp_path, "3 1 4 1 5 9", 1.5))
    events = EventBus()
    finals = collect(events, TurnFinal)
    app, runner = await started(config, events)
    base = app.mqtt.topics.base
    turn_topic, account_topic = f"{base}/event/turn", f"{base}/event/account"
    async with contextlib.AsyncExitStack() as stack:
        before = await stack.enter_async_context(watching(broker, f"{base}/#"))
        speech = app.daemon.ring.time_at(0) + 1.5
        await asyncio.sleep(max(0.0, speech - 0.2 - time.monotonic()))
        app.daemon.press("short")
        await wait_until(lambda: before.on(turn_topic), 20)
        broker.stop()  # a crash: the device's will says offline, nothing more
        with contextlib.suppress(Exception):
            await stack.aclose()
    await asyncio.sleep(1.5)
    broker.start()
    async with watching(broker, f"{base}/#") as after:
        await wait_until(lambda: "".join(words_to_digits(e.text) for e in finals) == "314159", 30)
        app.daemon.press("short")
        await asyncio.wait_for(app.daemon.wait_idle(), 20)
        await wait_until(lambda: after.on(account_topic), 15)
        await wait_until(lambda: len(before.on(turn_topic)) + len(after.on(turn_topic))
                         >= len(finals), 10)  # fmt: skip
    app.stop()
    assert await asyncio.wait_for(runner, 20) == 0

    # Audio unaffected: every digit in the live transcript, nothing spooled or lost.
    (account,) = app.daemon.accounts
    assert account.balanced and account.spooled_samples == 0
    # Every turn reached the broker; a repeat (QoS 1's at-least-once) is the same event.
    seen = before.json_on(turn_topic) + after.json_on(turn_topic)
    by_seq = {t["seq"]: t for t in seen}
    assert "".join(words_to_digits(by_seq[s]["text"]) for s in sorted(by_seq)) == "314159"
    assert len(by_seq) == len(finals)
    assert app.mqtt.connects == 2 and app.mqtt.dropped == 0
