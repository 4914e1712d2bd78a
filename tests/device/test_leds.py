"""The state LED: distinct patterns per state, driven on gpiozero mock pins."""

from __future__ import annotations

import asyncio
import time

import pytest

from appliance.config import LedConfig
from appliance.controls.leds import GREEN, RED, STATES, StateLed, pattern_for
from appliance.events import EventBus, StateChanged

WAIT_SECONDS = 3.0


def wait_for(predicate, timeout: float = WAIT_SECONDS) -> bool:
    """Poll a condition set by gpiozero's blink thread (it offers no event to wait on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.mark.parametrize("kind", ["led", "pwm", "rgb"])
def test_every_state_has_its_own_pattern(kind: str) -> None:
    patterns = [pattern_for(kind, state) for state in STATES]
    assert len(set(patterns)) == len(STATES)
    assert all(p.kind != "off" for p in patterns)


def test_plain_led_cannot_pulse_so_its_patterns_only_blink_or_stay_on() -> None:
    assert {pattern_for("led", s).kind for s in STATES} <= {"steady", "blink"}


def test_no_led_configured_touches_no_gpio() -> None:
    led = StateLed(LedConfig(kind="none"))
    led.open()
    led.show("listening")
    assert led.device is None


def test_plain_led_steady_and_blinking(mock_pins) -> None:
    led = StateLed(LedConfig(kind="led", pins=[27]))
    led.open()
    pin = mock_pins.pin(27)
    led.show("listening")
    assert pin.state
    led.show("error")  # fast blink: the pin must toggle repeatedly
    pin.clear_states()
    assert wait_for(lambda: len(pin.states) >= 5)
    led.show("listening")
    assert led.device.is_lit
    pin.clear_states()
    time.sleep(0.2)  # and stay on: steady means no blink thread
    assert len(pin.states) == 1 and pin.state
    led.close()


def test_active_low_led_is_inverted(mock_pins) -> None:
    led = StateLed(LedConfig(kind="led", pins=[27], active_high=False))
    led.open()
    led.show("listening")
    assert mock_pins.pin(27).state is False
    led.close()


def test_pwm_led_dims_when_idle_and_pulses_while_agent_speaks(mock_pwm_pins) -> None:
    led = StateLed(LedConfig(kind="pwm", pins=[18]))
    led.open()
    pin = mock_pwm_pins.pin(18)
    led.show("idle")
    assert 0 < pin.state < 0.2
    led.show("listening")
    assert pin.state == 1
    led.show("agent_speaking")
    pin.clear_states()
    # A pulse goes through many intermediate brightness levels.
    assert wait_for(lambda: len({round(s.state, 2) for s in pin.states}) >= 5)
    led.close()


def test_rgb_led_colours(mock_pwm_pins) -> None:
    led = StateLed(LedConfig(kind="rgb", pins=[5, 6, 13]))
    led.open()
    red, green, blue = (mock_pwm_pins.pin(n) for n in (5, 6, 13))
    led.show("listening")
    assert led.device.color == GREEN
    assert (red.state, green.state, blue.state) == (0, 1, 0)
    led.show("recording")
    assert led.device.color == RED
    led.show("offline")  # amber blink: red and green both come on
    red.clear_states()
    assert wait_for(lambda: any(s.state == 1 for s in red.states))
    led.close()


async def test_led_follows_state_events(mock_pins) -> None:
    bus = EventBus()
    led = StateLed(LedConfig(kind="led", pins=[27]))
    led.open()
    pin = mock_pins.pin(27)
    bus.publish(StateChanged(state="idle", mode="live"))
    task = asyncio.create_task(led.follow(bus))
    await asyncio.sleep(0)
    assert led.state == "idle"
    bus.publish(StateChanged(state="listening", mode="live"))
    for _ in range(100):
        if led.state == "listening":
            break
        await asyncio.sleep(0.01)
    assert led.state == "listening" and pin.state
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    led.close()
