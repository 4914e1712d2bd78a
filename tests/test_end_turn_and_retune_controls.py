"""The ``end_turn`` gesture and the page's retune and end-turn controls reach a live session."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from appliance.components import Components
from appliance.config import ButtonConfig, Config
from appliance.controller import Controller, EndTurn, Gesture
from appliance.daemon import Daemon
from appliance.events import EventBus
from appliance.protocol.tuning import Tuning
from appliance.service import ServiceNotifier
from appliance.session import NoticeCallback, Session
from appliance.web.retune import retune_request
from tests.test_daemon_loop import FakeAccount, FakeMicrophone, FakeTokens


def live_double_ends_the_turn() -> ButtonConfig:
    button = ButtonConfig()
    button.live.double = "end_turn"
    return button


def test_the_end_turn_gesture_ends_the_turn_of_a_running_live_session() -> None:
    c = Controller(live_double_ends_the_turn(), "live")
    assert c.on_gesture(Gesture("double", 1.0)) == []  # idle: no turn to end
    c.on_gesture(Gesture("short", 2.0))
    assert c.on_gesture(Gesture("double", 3.0)) == [EndTurn()]


def test_end_turn_means_nothing_outside_live_mode() -> None:
    button = ButtonConfig()
    button.record.double = "end_turn"
    c = Controller(button, "record")
    c.on_gesture(Gesture("short", 1.0))
    assert c.on_gesture(Gesture("double", 2.0)) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"keyterms": '["Pi", "Zero, W"]'}, {"keyterms_prompt": ["Pi", "Zero, W"]}),
        ({"keyterms": "[]"}, {"keyterms_prompt": []}),
        ({"min_turn_silence": "200", "max_turn_silence": ""}, {"min_turn_silence": 200}),
    ],
)
def test_a_retune_request_reads_json_key_terms_and_whole_ms(args, expected) -> None:
    assert retune_request(args) == expected


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"keyterms": "Pi,Zero"}, "JSON array"),
        ({"keyterms": '{"a": 1}'}, "JSON array"),
        ({"min_turn_silence": "-5"}, "whole number"),
        ({"max_turn_silence": "1e3"}, "whole number"),
        ({}, "nothing to retune"),
    ],
)
def test_a_malformed_retune_request_is_refused(args, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        retune_request(args)


class FakeLiveSession:
    """Runs until stopped; records the retunes and turn ends it is given."""

    def __init__(self) -> None:
        self.tuning = Tuning()
        self.turns_ended = 0
        self._stopped = asyncio.Event()

    async def run(self, start_index: int) -> FakeAccount:
        await self._stopped.wait()
        return FakeAccount()

    def request_stop(self, **_: object) -> None:
        self._stopped.set()

    def interrupt(self) -> None:
        pass

    def retune(self, **changes: object) -> Tuning:
        if changes.get("min_turn_silence") == 99_999:
            raise ValueError("min_turn_silence must be in 0..10000 ms")
        self.tuning = dataclasses.replace(
            self.tuning,
            **{k: tuple(v) if k == "keyterms_prompt" else v for k, v in changes.items()},  # type: ignore[call-overload]
        )
        return self.tuning

    def end_turn(self) -> None:
        self.turns_ended += 1


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_the_page_and_the_button_reach_the_running_live_session() -> None:
    config = Config()
    config.button = live_double_ends_the_turn()
    sessions: list[FakeLiveSession] = []

    def factory(on_notice: NoticeCallback) -> Session:
        sessions.append(FakeLiveSession())
        return sessions[-1]

    parts = Components(
        config=config,
        events=EventBus(),
        notifier=ServiceNotifier(lambda message: None),
        controller=Controller(config.button, "live"),
        microphone=FakeMicrophone(),  # type: ignore[arg-type]
        speaker=None,
        earcons=None,
        spool=None,
        spool_problem=None,
        uploader=None,
        gestures=asyncio.Queue[Gesture](),
        tokens={"live": FakeTokens(), "agent": FakeTokens()},  # type: ignore[dict-item]
        sessions={"live": factory, "agent": factory, "record": factory},
    )
    daemon = Daemon(parts)
    daemon.play_earcon = lambda name: None  # type: ignore[method-assign]
    runner = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 5)
    try:
        assert (await daemon.web_control("end_turn", {}))["ok"] is False  # nothing running
        assert (await daemon.web_control("retune", {"keyterms": '["Pi"]'}))["ok"] is False
        daemon.press("short")
        await settle()
        [session] = sessions
        daemon.press("double")
        await settle()
        assert (await daemon.web_control("end_turn", {}))["ok"] is True
        assert session.turns_ended == 2
        answer = await daemon.web_control(
            "retune", {"keyterms": '["Pi"]', "max_turn_silence": "900"}
        )
        assert answer == {
            "ok": True,
            "keyterms_prompt": ["Pi"],
            "min_turn_silence": None,
            "max_turn_silence": 900,
        }
        with pytest.raises(ValueError):  # the web server answers it with 400
            await daemon.web_control("retune", {"min_turn_silence": "99999"})
    finally:
        daemon.stop()
        assert await asyncio.wait_for(runner, 5) == 0
