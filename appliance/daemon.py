"""The daemon: wires capture, controls, sessions, spool and systemd together.

Shape (see DESIGN.md): the microphone runs all the time into the ring buffer;
button gestures go through the ``Controller`` (a pure state machine) which
returns actions; the daemon carries them out by starting, stopping or
interrupting one session runner at a time (live transcription, voice agent or
recording). The spool's uploader runs in the background whatever the mode.

Start-up order matters for systemd: ``READY=1`` is sent once the configuration
is valid and the microphone delivers audio, so ``systemctl start`` returns
when the device can really listen. SIGTERM stops the running session cleanly
(Terminate / session.end / the recording made durable) within the stop
timeout, then ``STOPPING=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import typing
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance.config import Config
from appliance.controller import (
    Action,
    Controller,
    Earcon,
    Gesture,
    Interrupt,
    ModeChanged,
    StartSession,
    StopSession,
)
from appliance.events import EventBus, StateChanged, idle
from appliance.exitcodes import ExitCode
from appliance.logs import log_context
from appliance.modes import MODE_LABELS

if TYPE_CHECKING:
    from appliance.modes import Mode

log = logging.getLogger("appliance.daemon")

# How long the microphone may take to deliver its first block before start-up
# reports it missing (PulseAudio takes ~1.5 s; a USB mic far less).
FIRST_AUDIO_TIMEOUT = 10.0
# A stopping session gets this long to finish cleanly before it is cancelled.
SESSION_STOP_TIMEOUT = 8.0

# Notices from sessions, and the earcon each is announced with.
NOTICE_EARCONS = {"new_conversation": "error", "spooled": "saved"}


class SessionRunner(Protocol):
    """What every mode's session offers the daemon."""

    async def run(self, start_index: int) -> Any: ...

    def request_stop(self) -> None: ...


class Daemon:
    """One running appliance. ``gestures`` replaces the GPIO button (demo, tests)."""

    def __init__(
        self,
        config: Config,
        *,
        gestures: AsyncIterator[Gesture] | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.config = config
        self.events = events or EventBus()
        self.controller = Controller(config.button, config.mode)
        self._external_gestures = gestures
        self._gesture_queue: asyncio.Queue[Gesture] = asyncio.Queue()
        self._session_task: asyncio.Task | None = None
        self._session: SessionRunner | None = None
        self._stop = asyncio.Event()
        self.ready = asyncio.Event()  # set once READY=1 would be (or was) sent
        self._closers: list[Callable[[], Any]] = []
        self.accounts: list[Any] = []
        self.source: Any = None
        self.playback: Any = None
        self.spool: Any = None
        self.spool_problem: str | None = None  # why the spool could not be opened
        self.uploader: Any = None
        self.notifier: Any = None
        self.earcons: Any = None
        self.web: Any = None
        self._stream_tokens: Any = None
        self._agent_tokens: Any = None
        self._background: list[asyncio.Task] = []

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or ``stop()``; the exit code for the process."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        from appliance.service import ServiceNotifier

        self.notifier = ServiceNotifier()
        self.notifier.status("starting")
        try:
            await self._start_components()
        except Exception as exc:
            log.error("start-up failed: %s", exc)
            self.notifier.status(f"failed: {exc}")
            await self._close_components()
            return ExitCode.FAILURE
        self.notifier.ready()
        self.ready.set()
        self._publish_idle()
        log.info(
            "ready: %s mode, microphone %s at %d Hz",
            MODE_LABELS[self.controller.mode],
            getattr(self.source, "device_label", "") or "(file)",
            self.ring.rate,
        )
        try:
            await self._main_loop()
        finally:
            self.notifier.stopping()
            self.notifier.status("stopping")
            await self._stop_session(timeout=SESSION_STOP_TIMEOUT)
            await self._close_components()
        return ExitCode.OK

    def stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this)."""
        self._stop.set()

    def press(self, kind: str = "short", at: float | None = None) -> None:
        """Inject a gesture as if the button did it (demo, tests, web controls)."""
        self._gesture_queue.put_nowait(Gesture(kind, time.monotonic() if at is None else at))

    async def wait_idle(self) -> None:
        """Wait until no session runs."""
        while self._session_task is not None:
            await asyncio.shield(self._session_task)
            await asyncio.sleep(0)

    # ------------------------------------------------------------ wiring

    async def _start_components(self) -> None:
        from appliance.wiring import build_components

        await build_components(self)

    async def _close_components(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background.clear()
        while self._closers:
            closer = self._closers.pop()
            try:
                result = closer()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("error while closing")

    @property
    def ring(self) -> Any:
        return self.source.ring

    # ------------------------------------------------------------ main loop

    async def _main_loop(self) -> None:
        pumps = (
            [asyncio.create_task(self._pump_gestures(self._external_gestures))]
            if self._external_gestures is not None
            else []
        )
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                get = asyncio.create_task(self._gesture_queue.get())
                done, _ = await asyncio.wait({get, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    self._carry_out(self.controller.on_gesture(get.result()))
                else:
                    get.cancel()
        finally:
            stop_wait.cancel()
            for pump in pumps:
                pump.cancel()

    async def _pump_gestures(self, gestures: AsyncIterator[Gesture]) -> None:
        async for gesture in gestures:
            self._gesture_queue.put_nowait(gesture)

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StartSession):
                self._start_session(action)
            elif isinstance(action, StopSession):
                if self._session is not None:
                    self._session.request_stop()
            elif isinstance(action, Interrupt):
                interrupt = getattr(self._session, "interrupt", None)
                if interrupt is not None:
                    interrupt()
            elif isinstance(action, ModeChanged):
                from appliance.wiring import prefetch_for_mode

                log.info("mode: %s", MODE_LABELS[action.mode])
                prefetch_for_mode(self)
                self._publish_idle()
            elif isinstance(action, Earcon):
                self.play_earcon(action.name)

    def play_earcon(self, name: str) -> None:
        """Play a short sound; session notices map onto the device's few earcons."""
        name = NOTICE_EARCONS.get(name, name)
        if self.earcons is not None:
            try:
                self.earcons.play(name)
            except Exception:
                log.exception("earcon %s failed", name)

    # ------------------------------------------------------------ sessions

    def _start_session(self, action: StartSession) -> None:
        from appliance.wiring import make_session

        start_index = self.ring.preroll_index(action.press_time, self.config.audio.preroll_seconds)
        session = make_session(self, action.mode)
        self._session = session
        self._session_task = asyncio.create_task(
            self._run_session(session, action.mode, start_index), name=f"session-{action.mode}"
        )

    async def _run_session(self, session: SessionRunner, mode: str, start_index: int) -> None:
        account: Any = None
        try:
            with log_context(MODE=mode):
                account = await session.run(start_index)
        except asyncio.CancelledError:
            log.warning("%s session cancelled", mode)
            raise
        except Exception as exc:
            log.exception("%s session failed", mode)
            state = StateChanged(state="error", mode=typing.cast("Mode", mode), detail=str(exc))
            self.events.publish(state)
            self.play_earcon("error")
        finally:
            self.accounts.append(account)
            if getattr(account, "spooled_samples", 0):
                # Part of what was said could not be delivered live: it is kept for later.
                self.play_earcon("saved")
            self._session = None
            self._session_task = None
            if self.uploader is not None:
                self.uploader.wake()  # a recording, or a live session's gap, may be ready
            self._carry_out(self.controller.on_session_ended())
            self._publish_idle()

    async def _stop_session(self, timeout: float) -> None:
        task, session = self._session_task, self._session
        if task is None or session is None:
            return
        session.request_stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            log.error("session did not stop within %.0f s; cancelling it", timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        except Exception:  # the session's own failure is already logged
            pass

    # ------------------------------------------------------------ the page

    def status_snapshot(self) -> dict[str, Any]:
        """What the status page shows beyond the latest events."""
        from appliance.web.snapshot import spool_section, spool_unavailable

        out: dict[str, Any] = {"mode": self.controller.mode, "phase": self.controller.phase.value}
        if self.source is not None:
            out["overflows"] = getattr(self.source, "overflows", 0)
            out["level_dbfs"] = round(self.source.level_dbfs().rms_dbfs, 1)
        if self.spool is not None:
            out["spool"] = spool_section(self.spool)
        elif self.spool_problem is not None:
            out["spool"] = spool_unavailable(self.spool_problem)
        if self.uploader is not None:
            out["connection"] = "offline" if self.uploader.offline else "online"
        return out

    async def web_control(self, action: str, args: dict[str, str]) -> dict[str, Any]:
        """Controls from the local page (token-checked there): the same paths as the button."""
        controller = self.controller
        if action == "start_session":
            self._carry_out(controller.request_start(time.monotonic()))
        elif action == "stop_session":
            self._carry_out(controller.request_stop())
        elif action == "switch_mode":
            self._carry_out(controller.request_switch_mode())
        elif action == "retry_spool":
            if self.spool is None:
                return {"ok": False, "error": "no spool"}
            ident = args.get("id")
            count = (1 if self.spool.retry(ident) else 0) if ident else len(self.spool.retry_all())
            if self.uploader is not None:
                self.uploader.wake()
            return {"ok": True, "retried": count}
        return {"ok": True, "mode": controller.mode, "phase": controller.phase.value}

    def _publish_idle(self) -> None:
        if self._session is None:
            self.events.publish(idle(self.controller.mode))


def run_daemon(config: Config, *, state_dir: Path | None = None) -> int:
    """Entry point of ``appliance run``."""
    if state_dir is not None:
        config.state_dir = state_dir
    try:
        return asyncio.run(Daemon(config).run())
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
