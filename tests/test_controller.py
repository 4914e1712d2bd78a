"""What each gesture means, per mode and phase."""

from __future__ import annotations

from appliance.config import ButtonConfig
from appliance.controller import (
    Controller,
    Earcon,
    Gesture,
    Interrupt,
    ModeChanged,
    Phase,
    StartSession,
    StopSession,
)


def press(kind: str, at: float = 10.0) -> Gesture:
    return Gesture(kind, at)


def test_short_press_toggles_a_live_session_with_the_press_time() -> None:
    c = Controller(ButtonConfig(), "live")
    assert c.on_gesture(press("short", 12.5)) == [Earcon("start"), StartSession("live", 12.5)]
    assert c.on_gesture(press("short")) == [StopSession()]
    assert c.phase is Phase.STOPPING
    assert c.on_session_ended() == [Earcon("stop")]
    assert c.phase is Phase.IDLE


def test_presses_while_stopping_do_not_start_a_second_session() -> None:
    c = Controller(ButtonConfig(), "record")
    c.on_gesture(press("short"))
    c.on_gesture(press("short"))
    assert c.on_gesture(press("short")) == []


def test_agent_press_interrupts_only_while_the_agent_speaks() -> None:
    c = Controller(ButtonConfig(), "agent")
    assert c.on_gesture(press("short"))[-1] == StartSession("agent", 10.0)
    assert c.on_gesture(press("short")) == []  # listening: nothing to interrupt
    c.on_agent_speaking(True)
    assert c.on_gesture(press("short")) == [Interrupt()]
    assert c.phase is Phase.ACTIVE


def test_agent_long_press_ends_the_conversation() -> None:
    c = Controller(ButtonConfig(), "agent")
    c.on_gesture(press("short"))
    assert c.on_gesture(press("long")) == [StopSession()]


def test_long_press_when_idle_cycles_the_modes() -> None:
    c = Controller(ButtonConfig(), "live")
    assert c.on_gesture(press("long")) == [Earcon("mode"), ModeChanged("agent")]
    assert c.on_gesture(press("double")) == [Earcon("mode"), ModeChanged("record")]
    assert c.on_gesture(press("long")) == [Earcon("mode"), ModeChanged("live")]


def test_switching_mode_during_a_session_stops_it_first() -> None:
    c = Controller(ButtonConfig(), "live")
    c.on_gesture(press("short"))
    assert c.on_gesture(press("long")) == [StopSession()]
    assert c.mode == "live"
    assert c.on_session_ended() == [Earcon("stop"), ModeChanged("agent")]
    assert c.mode == "agent"


def test_hold_to_talk_starts_on_press_and_stops_on_release() -> None:
    c = Controller(ButtonConfig(hold_to_talk=True), "live")
    assert c.on_gesture(press("press", 3.0)) == [Earcon("start"), StartSession("live", 3.0)]
    assert c.on_gesture(press("short")) == []
    assert c.on_gesture(press("release")) == [StopSession()]


def test_hold_to_talk_does_not_apply_to_the_agent() -> None:
    c = Controller(ButtonConfig(hold_to_talk=True), "agent")
    assert c.on_gesture(press("press")) == []
    assert c.on_gesture(press("short"))[-1] == StartSession("agent", 10.0)


def test_session_ending_on_its_own_returns_to_idle() -> None:
    c = Controller(ButtonConfig(), "live")
    c.on_gesture(press("short"))
    assert c.on_session_ended() == [Earcon("stop")]
    assert c.on_gesture(press("short"))[-1] == StartSession("live", 10.0)


def test_none_action_does_nothing() -> None:
    c = Controller(ButtonConfig(), "live")
    assert c.on_gesture(press("double")) == []


def test_holding_to_talk_past_the_long_press_time_does_not_switch_mode() -> None:
    c = Controller(ButtonConfig(hold_to_talk=True), "live")
    c.on_gesture(press("press"))
    assert c.on_gesture(press("long")) == []
    assert c.mode == "live"
    assert c.on_gesture(press("release")) == [StopSession()]


def test_hold_to_talk_long_press_when_idle_still_switches_mode() -> None:
    c = Controller(ButtonConfig(hold_to_talk=True), "record")
    c.on_gesture(press("press"))
    c.on_gesture(press("release"))
    c.on_session_ended()
    assert c.on_gesture(press("long"))[-1] == ModeChanged("live")


def test_page_controls_follow_the_same_rules_as_the_button() -> None:
    c = Controller(ButtonConfig(), "live")
    assert c.request_stop() == []  # nothing to stop
    assert c.request_start(4.0) == [Earcon("start"), StartSession("live", 4.0)]
    assert c.request_start(5.0) == []  # one session at a time
    assert c.request_switch_mode() == [StopSession()]
    assert c.on_session_ended() == [Earcon("stop"), ModeChanged("agent")]
