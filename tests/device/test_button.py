"""Button gestures: the pure recogniser, then the gpiozero and keyboard bindings."""

from __future__ import annotations

import asyncio
import os

import pytest

from appliance.config import ButtonConfig
from appliance.controller import Controller, Gesture, StartSession, StopSession
from appliance.controls.button import ButtonGestures, GestureRecognizer, keyboard_gesture

GET_TIMEOUT = 3.0


def kinds(gestures: list[Gesture]) -> list[str]:
    return [g.kind for g in gestures]


def recognizer(double: float = 0.4, bounce: float = 0.0) -> GestureRecognizer:
    return GestureRecognizer(long_press_seconds=1.0, double_press_seconds=double,
                             bounce_seconds=bounce)  # fmt: skip


# -- the pure state machine ----------------------------------------------------


def test_short_press_is_reported_after_the_double_window() -> None:
    r = recognizer()
    assert kinds(r.press(10.0)) == ["press"]
    assert kinds(r.release(10.2)) == ["release"]
    assert r.deadline == pytest.approx(10.6)
    assert r.expire(10.5) == []
    assert r.expire(10.6) == [Gesture("short", 10.0)]
    assert r.deadline is None


def test_short_press_is_immediate_when_double_is_not_wanted() -> None:
    r = recognizer()
    r.double_enabled = False
    r.press(1.0)
    assert kinds(r.release(1.1)) == ["release", "short"]
    assert r.deadline is None


def test_long_press_fires_while_still_held() -> None:
    r = recognizer()
    r.press(5.0)
    assert r.deadline == pytest.approx(6.0)
    assert r.expire(6.0) == [Gesture("long", 5.0)]
    # The release after a long press is only a release, never also a short press.
    assert kinds(r.release(7.5)) == ["release"]
    assert r.expire(100.0) == []


def test_double_press_is_reported_on_the_second_press() -> None:
    r = recognizer()
    r.press(1.0)
    r.release(1.1)
    assert kinds(r.press(1.3)) == ["press", "double"]
    assert r.expire(5.0) == []  # neither short nor long follow
    assert kinds(r.release(5.1)) == ["release"]
    assert r.expire(9.0) == []


def test_second_press_after_the_window_is_a_new_gesture() -> None:
    r = recognizer()
    r.press(1.0)
    r.release(1.1)
    # The edge arrives late; the expired window is settled first, in time order.
    assert kinds(r.press(2.0)) == ["short", "press"]
    assert kinds(r.release(2.1)) == ["release"]
    assert kinds(r.expire(2.5)) == ["short"]


def test_contact_bounce_is_filtered() -> None:
    r = recognizer(double=0.0, bounce=0.03)
    out = r.press(1.000) + r.release(1.005) + r.press(1.010) + r.release(1.015) + r.press(1.020)
    assert kinds(out) == ["press"]
    out = r.expire(1.2) + r.release(1.300) + r.press(1.310) + r.release(1.320)
    assert kinds(out) == ["release", "short"]
    assert r.expire(1.4) == []
    assert not r.is_pressed


def test_a_bounce_that_settles_released_is_not_stuck_down() -> None:
    r = recognizer(double=0.0, bounce=0.03)
    r.press(1.0)
    assert r.release(1.01) == []  # inside the bounce window: held back
    assert r.is_pressed
    assert kinds(r.expire(1.03)) == ["release", "short"]
    assert not r.is_pressed


def test_keyboard_lines() -> None:
    assert keyboard_gesture("\n") == "short"
    assert keyboard_gesture("l") == "long"
    assert keyboard_gesture("D") == "double"
    assert keyboard_gesture("p") == "press"
    assert keyboard_gesture("r") == "release"
    assert keyboard_gesture("what") is None


# -- gpiozero binding (mock pins) ------------------------------------------------


def fast_config(**overrides: object) -> ButtonConfig:
    values: dict[str, object] = dict(
        pin=17, bounce_ms=0, long_press_seconds=0.3, double_press_seconds=0.2
    )
    values.update(overrides)
    return ButtonConfig(**values)  # type: ignore[arg-type]


async def next_kinds(buttons: ButtonGestures, n: int) -> list[str]:
    return [(await asyncio.wait_for(buttons.get(), GET_TIMEOUT)).kind for _ in range(n)]


async def test_gpio_short_press(mock_pins) -> None:
    buttons = ButtonGestures(fast_config())
    buttons.start()
    pin = buttons.button.pin
    pin.drive_low()  # pressed (wired to ground, pull-up)
    pin.drive_high()
    assert await next_kinds(buttons, 3) == ["press", "release", "short"]
    buttons.close()


async def test_gpio_long_press(mock_pins) -> None:
    buttons = ButtonGestures(fast_config())
    buttons.start()
    pin = buttons.button.pin
    pin.drive_low()
    assert await next_kinds(buttons, 2) == ["press", "long"]  # while still held
    pin.drive_high()
    assert await next_kinds(buttons, 1) == ["release"]
    buttons.close()


async def test_gpio_double_press(mock_pins) -> None:
    buttons = ButtonGestures(fast_config(double_press_seconds=1.0))
    buttons.start()
    pin = buttons.button.pin
    for _ in range(2):
        pin.drive_low()
        pin.drive_high()
    assert await next_kinds(buttons, 5) == ["press", "release", "press", "double", "release"]
    buttons.close()


async def test_gpio_short_press_does_not_wait_when_mode_has_no_double(mock_pins) -> None:
    # A long window would delay "short" by 5 s if the recogniser waited for it.
    buttons = ButtonGestures(fast_config(double_press_seconds=5.0), wants_double=lambda: False)
    buttons.start()
    buttons.button.pin.drive_low()
    buttons.button.pin.drive_high()
    assert await next_kinds(buttons, 3) == ["press", "release", "short"]
    buttons.close()


async def test_hold_to_talk_press_starts_and_release_stops(mock_pins) -> None:
    config = fast_config(hold_to_talk=True, long_press_seconds=5.0)
    controller = Controller(config, "live")
    actions: list[object] = []
    done = asyncio.Event()

    def on_gesture(gesture: Gesture) -> None:
        actions.extend(controller.on_gesture(gesture))
        if gesture.kind == "short":
            done.set()

    buttons = ButtonGestures(config, on_gesture=on_gesture)
    buttons.start()
    buttons.button.pin.drive_low()
    buttons.button.pin.drive_high()
    await asyncio.wait_for(done.wait(), GET_TIMEOUT)
    buttons.close()
    assert [type(a) for a in actions if isinstance(a, StartSession | StopSession)] == [
        StartSession,
        StopSession,
    ]


async def test_no_gpio_device_when_button_disabled(mock_pins) -> None:
    buttons = ButtonGestures(fast_config(enabled=False))
    buttons.start()
    assert buttons.button is None
    buttons.inject("short")
    assert await next_kinds(buttons, 1) == ["short"]
    buttons.close()


async def test_keyboard_fallback_reads_lines_from_stdin() -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "r") as stream:
        buttons = ButtonGestures(fast_config(enabled=False, keyboard=True), keyboard_stream=stream)
        buttons.start()
        os.write(write_fd, b"\nl\nd\nnonsense\n")
        assert await next_kinds(buttons, 3) == ["short", "long", "double"]
        os.close(write_fd)  # EOF: the reader is removed, nothing breaks
        await asyncio.sleep(0.05)
        buttons.close()


async def test_iteration_ends_on_close(mock_pins) -> None:
    buttons = ButtonGestures(fast_config())
    buttons.start()
    seen: list[str] = []
    first = asyncio.Event()

    async def collect() -> None:
        async for gesture in buttons:
            seen.append(gesture.kind)
            first.set()

    task = asyncio.create_task(collect())
    buttons.button.pin.drive_low()
    await asyncio.wait_for(first.wait(), GET_TIMEOUT)
    buttons.close()
    await asyncio.wait_for(task, GET_TIMEOUT)
    assert seen == ["press"]
