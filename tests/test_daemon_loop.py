"""The daemon's control loop over stand-in parts: what it keeps, what it leaves behind.

No audio, cloud or systemd here (``test_daemon.py`` runs the real parts): the
sessions are stand-ins that end when asked, so each test is about the loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import weakref

import numpy as np

from appliance.audio.ring import RingBuffer
from appliance.components import Components
from appliance.config import Config
from appliance.controller import Controller, Gesture
from appliance.daemon import Daemon
from appliance.events import EventBus, StateChanged
from appliance.service import ServiceNotifier
from appliance.session import NoticeCallback, Session

RATE = 16_000


@dataclasses.dataclass
class FakeAccount:
    spooled_samples: int = 0


class FakeSession:
    """Runs until stopped; its account spools ``spooled`` samples."""

    def __init__(self, spooled: int = 0) -> None:
        self.spooled = spooled
        self.interrupts = 0
        self._stopped = asyncio.Event()

    async def run(self, start_index: int) -> FakeAccount:
        await self._stopped.wait()
        return FakeAccount(self.spooled)

    def request_stop(self) -> None:
        self._stopped.set()

    def interrupt(self) -> None:
        self.interrupts += 1


class FakeTokens:
    def __init__(self) -> None:
        self.running = False

    def start(self) -> None:
        self.running = True

    async def aclose(self) -> None:
        self.running = False


class FakeMicrophone:
    def __init__(self) -> None:
        self.ring = RingBuffer(RATE, 2.0)
        self.ring.write(np.zeros(RATE, dtype=np.int16), 0.0)
        self.overflows = 0
        self.device_label = "fake"

    def level_dbfs(self, window_seconds: float = 0.1) -> object:
        raise NotImplementedError

    def stop(self) -> None:
        pass


@dataclasses.dataclass
class Rig:
    daemon: Daemon
    sessions: list[FakeSession]
    tokens: dict[str, FakeTokens]
    earcons: list[str]
    runner: asyncio.Task[int]

    async def press(self, kind: str = "short") -> None:
        self.daemon.press(kind)
        for _ in range(20):  # the loop and the session tasks take a few turns
            await asyncio.sleep(0)

    async def close(self) -> None:
        self.daemon.stop()
        assert await asyncio.wait_for(self.runner, 5) == 0


async def rig(mode: str = "live", spooled: int = 0, kept_accounts: int = 3) -> Rig:
    config = Config()
    config.mode = mode
    events = EventBus()
    sessions: list[FakeSession] = []
    tokens = {"live": FakeTokens(), "agent": FakeTokens()}

    def factory(on_notice: NoticeCallback) -> Session:
        sessions.append(FakeSession(spooled))
        return sessions[-1]

    parts = Components(
        config=config,
        events=events,
        notifier=ServiceNotifier(lambda message: None),
        controller=Controller(config.button, mode),
        microphone=FakeMicrophone(),  # type: ignore[arg-type]
        speaker=None,
        earcons=None,
        spool=None,
        spool_problem=None,
        uploader=None,
        gestures=asyncio.Queue[Gesture](),
        tokens=tokens,  # type: ignore[arg-type]
        sessions={"live": factory, "agent": factory, "record": factory},
    )
    daemon = Daemon(parts, kept_accounts=kept_accounts)
    earcons: list[str] = []
    daemon.play_earcon = earcons.append  # type: ignore[method-assign]
    runner = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 5)
    return Rig(daemon, sessions, tokens, earcons, runner)


async def test_only_the_last_accounts_are_kept() -> None:
    r = await rig(kept_accounts=3)
    for _ in range(5):
        await r.press()  # start
        await r.press()  # stop
        await asyncio.wait_for(r.daemon.wait_idle(), 5)
    assert len(r.sessions) == 5
    assert len(r.daemon.accounts) == 3
    await r.close()


async def test_a_finished_sessions_cycles_are_freed_when_it_ends() -> None:
    """A session's objects refer to each other; none of them outlives the session.

    Automatic collection is off, so only the daemon's collection after each
    session can free them: after five sessions, none is left.
    """
    r = await rig()
    left: list[weakref.ref[FakeSession]] = []
    gc.disable()
    try:
        for _ in range(5):
            await r.press()  # start
            (session,) = r.sessions
            session.me = session  # type: ignore[attr-defined]  # a cycle, as real sessions have
            left.append(weakref.ref(session))
            r.sessions.clear()
            del session
            await r.press()  # stop
            await asyncio.wait_for(r.daemon.wait_idle(), 5)
            for _ in range(5):  # the task's done callback runs a turn after it ends
                await asyncio.sleep(0)
    finally:
        gc.enable()
    assert sum(ref() is not None for ref in left) == 0
    await r.close()


async def test_mode_switches_leave_no_finished_task_behind() -> None:
    r = await rig()
    for _ in range(9):  # live -> agent -> record -> live ...
        await r.daemon.web_control("switch_mode", {})
        await asyncio.sleep(0.01)  # presses come seconds apart: the last closing is done
    assert r.daemon.controller.mode == "live"
    assert r.tokens["live"].running and not r.tokens["agent"].running
    assert not r.daemon._background  # each closing task removed itself when done
    await r.close()


async def test_a_press_while_the_agent_speaks_interrupts_it() -> None:
    r = await rig(mode="agent")
    await r.press()  # start the conversation
    (session,) = r.sessions
    r.daemon.events.publish(StateChanged(state="agent_speaking", mode="agent"))
    await r.press()
    assert session.interrupts == 1
    assert r.daemon._session is session  # interrupted, not stopped
    await r.close()


async def test_a_session_that_spooled_audio_ends_with_the_saved_earcon() -> None:
    r = await rig(spooled=RATE)
    await r.press()
    await r.press()
    await asyncio.wait_for(r.daemon.wait_idle(), 5)
    assert "saved" in r.earcons
    await r.close()


async def test_a_session_that_spooled_nothing_has_no_saved_earcon() -> None:
    r = await rig(spooled=0)
    await r.press()
    await r.press()
    await asyncio.wait_for(r.daemon.wait_idle(), 5)
    assert r.earcons == ["start", "stop"]
    await r.close()


async def test_stopping_the_daemon_stops_the_running_session() -> None:
    r = await rig()
    await r.press()
    (session,) = r.sessions
    await r.close()
    assert session._stopped.is_set()
    assert list(r.daemon.accounts) == [FakeAccount(0)]
