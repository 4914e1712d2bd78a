"""Volume and mute over MQTT: a running daemon commanded from a real Mosquitto.

The command interface reaches the same controls as the page: each volume
command is applied, kept in ``controls.json`` and answered on ``<base>/result``;
a start while muted is refused there with the reason a person reads.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

from appliance import dtmf
from appliance.app import Appliance
from appliance.config import Config
from appliance.events import EventBus, MuteChanged, VolumeChanged
from appliance.secrets import Secret
from tests.events import collect
from tests.test_daemon import daemon_config as file_daemon_config

from .conftest import DEVICE_PASSWORD, Broker
from .helpers import publish, settings_for, watching

RATE = 48000


def daemon_config(tmp_path: Path, emulator, broker: Broker) -> Config:
    mic = tmp_path / "mic.wav"
    dtmf.write_wav(mic, np.zeros(10 * RATE, dtype=np.int16), RATE)
    config = file_daemon_config(tmp_path, emulator, "live", mic)
    config.upload.enabled = False
    config.mqtt = settings_for(broker, base_topic=None)
    config.mqtt_password = Secret(DEVICE_PASSWORD)
    return config


async def test_volume_and_mute_commands_are_applied_kept_and_answered(tmp_path, emulator, broker):
    config = daemon_config(tmp_path, emulator, broker)
    events = EventBus()
    volumes, mutes = collect(events, VolumeChanged), collect(events, MuteChanged)
    app = Appliance(config, events=events)
    runner = asyncio.create_task(app.run())
    try:
        await asyncio.wait_for(app.ready.wait(), 20)
        assert app.mqtt is not None and app.daemon is not None
        await asyncio.wait_for(app.mqtt.connected.wait(), 10)
        base = app.mqtt.topics.base
        result_topic = f"{base}/result"
        volume_topic, mute_topic = f"{base}/volume", f"{base}/mute"
        async with watching(broker, result_topic, volume_topic, mute_topic) as watcher:
            commands = (("volume", "40"), ("volume", "up"), ("volume", "140"),
                        ("mute", "on"), ("start", "PRESS"), ("mute", "off"))  # fmt: skip
            for sent, (name, payload) in enumerate(commands, 1):  # one answer before the next
                await publish(broker, f"{base}/cmd/{name}", payload)
                await watcher.wait_for(lambda n=sent: len(watcher.on(result_topic)) >= n)
            results = watcher.json_on(result_topic)
            # What Home Assistant shows: the retained states follow every change.
            await watcher.wait_for(lambda: watcher.latest(mute_topic) == "off")
            shown = (watcher.on(volume_topic), watcher.on(mute_topic))
        assert app.daemon._session is None  # the start while muted started nothing
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0

    assert [(r["command"], r["ok"]) for r in results] == [
        ("volume", True), ("volume", True), ("volume", False),
        ("mute", True), ("start", False), ("mute", True),
    ]  # fmt: skip
    assert results[1]["volume"] == {"percent": 50, "gain": 0.25}
    assert results[4]["reason"] == "muted: unmute to start live transcription"
    assert [(v.percent, v.source) for v in volumes] == [(70, "start"), (40, "mqtt"), (50, "mqtt")]
    assert [(m.muted, m.source) for m in mutes] == [
        (False, "start"), (True, "mqtt"), (False, "mqtt")
    ]  # fmt: skip
    assert shown == (["70", "40", "50"], ["off", "on", "off"])
    kept = json.loads((config.state_path / "controls.json").read_text())
    assert kept == {"muted": False, "volume_percent": 50}
