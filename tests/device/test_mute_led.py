"""The LED says the microphone is muted: a running daemon, its RGB LED and mute switch on
gpiozero mock pins (PWM, so the colour is read back from each pin)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from appliance import dtmf
from appliance.app import Appliance
from appliance.config import Config
from appliance.controls.leds import DIM_BLUE, GREEN, MAGENTA
from appliance.events import EventBus, StateChanged
from tests.events import collect, wait_for
from tests.test_daemon import daemon_config

RATE = 48_000
LED_PINS = [5, 6, 13]
MUTE_PIN = 27


def device_config(tmp_path: Path, emulator) -> Config:
    mic = tmp_path / "mic.wav"
    dtmf.write_wav(mic, np.zeros(10 * RATE, dtype=np.int16), RATE)
    config = daemon_config(tmp_path, emulator, "live", mic)
    config.upload.enabled = False
    config.led.kind = "rgb"
    config.led.pins = LED_PINS
    config.mute.switch = True
    config.mute.pin = MUTE_PIN
    config.mute.bounce_ms = 0
    return config


async def test_the_led_shows_muted_from_the_switch_through_a_press_until_unmuted(
    tmp_path, emulator, mock_pwm_pins: MockFactory
):
    config = device_config(tmp_path, emulator)
    bus = EventBus()
    states = collect(bus, StateChanged)
    pins = [mock_pwm_pins.pin(n) for n in LED_PINS]

    def color() -> tuple[float, ...]:
        return tuple(round(float(p.state), 3) for p in pins)

    app = Appliance(config, events=bus)
    runner = asyncio.create_task(app.run())
    await asyncio.wait_for(app.ready.wait(), 20)
    try:
        daemon = app.daemon
        assert daemon is not None
        switch = mock_pwm_pins.pin(MUTE_PIN)
        await wait_for(lambda: color() == DIM_BLUE, "idle")
        daemon.press("short")
        await wait_for(lambda: color() == GREEN, "listening")
        switch.drive_low()  # the switch closes: the session ends, the LED says muted
        await wait_for(lambda: color() == pytest.approx(MAGENTA), "muted")
        await asyncio.wait_for(daemon.wait_idle(), 15)
        daemon.press("short")  # told, nothing starts: the LED stays muted
        await wait_for(lambda: states[-1].detail.startswith("muted: unmute"), "the notice")
        assert color() == pytest.approx(MAGENTA)
        assert daemon._session is None
        switch.drive_high()
        await wait_for(lambda: color() == DIM_BLUE, "idle again once unmuted")
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0
