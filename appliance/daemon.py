"""The daemon: the control loop over the parts ``wiring`` built.

Shape (see DESIGN.md): the microphone runs all the time into the ring buffer;
button gestures go through the ``Controller`` (a pure state machine) which
returns actions; the daemon carries them out by starting, stopping or
interrupting one session at a time (live transcription, voice agent or
recording). The spool's uploader runs in the background whatever the mode.

``READY=1`` is sent when the loop starts, i.e. once the parts are open and the
microphone delivers audio, so ``systemctl start`` returns when the device can
really listen. Stopping ends the running session cleanly (Terminate /
session.end / the recording made durable) within the stop timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import typing
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from appliance.controller import (
    Action,
    ChangeVolume,
    Earcon,
    EndTurn,
    Gesture,
    Interrupt,
    ModeChanged,
    MutedPress,
    StartSession,
    StopSession,
    ToggleMute,
)
from appliance.events import ControlSource, ErrorReported, Event, Published, StateChanged, idle
from appliance.exitcodes import ExitCode
from appliance.logs import log_context
from appliance.modes import MODE_LABELS
from appliance.session import Account, LiveControls, Session

if TYPE_CHECKING:
    from appliance.audio.ring import RingBuffer
    from appliance.components import Components
    from appliance.controls.person import PersonControls
    from appliance.modes import Mode

log = logging.getLogger("appliance.daemon")

#: A stopping session gets this long to finish cleanly before it is cancelled.
SESSION_STOP_TIMEOUT = 8.0
#: Accounts of finished sessions kept for the page and status (oldest dropped first).
DEFAULT_KEPT_ACCOUNTS = 20

#: The page's and MQTT's volume and mute controls (:meth:`Daemon.control`).
PERSON_ACTIONS = ("volume_up", "volume_down", "set_volume", "mute", "unmute", "toggle_mute")

#: Notices from sessions, and the earcon each is announced with.
NOTICE_EARCONS = {"new_conversation": "error", "spooled": "saved"}


def collect_session_garbage(_task: object = None) -> int:
    """Free what reference cycles kept of the session that just ended; the objects freed.

    A finished live session is a cycle (its protocol machine and its spool
    keeper hold bound methods of it), and with it go its 16 kHz mirror ring,
    its soxr resampler and its sockets' transports; so it is freed by the
    cyclic collector, not when the session ends. Left to the collector's
    thresholds a full collection came only every several sessions, and the
    sessions waiting for it grew the C heap, which glibc kept: over a
    200-session soak the heap in use rose from 10.9 to 13-15 MiB and RSS by
    4.7 MiB from session 20; collected after each session, the heap stayed at
    11.1-11.3 MiB and RSS rose 1.0 MiB. Runs once the session task is done (its
    frame, and so the session, are gone), while the device is idle; startup's
    objects are frozen out of it (:func:`freeze_startup_objects`).
    """
    return gc.collect()


def freeze_startup_objects() -> None:
    """Keep the objects made while starting out of every later collection (``gc.freeze``).

    They live as long as the daemon runs; scanning them (some 45,000 tracked
    objects) made each collection cost about 10 ms of CPU here, far more on a Pi.
    :meth:`Daemon.run` unfreezes them when it ends.
    """
    gc.collect()
    gc.freeze()


class Daemon:
    """Runs the control loop over ``components`` until :meth:`stop`; closing them is not its job."""

    def __init__(
        self,
        components: Components,
        *,
        ready: asyncio.Event | None = None,
        kept_accounts: int = DEFAULT_KEPT_ACCOUNTS,
    ) -> None:
        self.components = components
        self.config = components.config
        self.events = components.events
        self.controller = components.controller
        self.ready = ready or asyncio.Event()  # set once READY=1 is sent
        #: Finished sessions' accounts, newest last (None for a refused press).
        self.accounts: deque[Account | None] = deque(maxlen=kept_accounts)
        self._session: Session | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    @property
    def ring(self) -> RingBuffer:
        return self.components.ring

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> int:
        """Run until :meth:`stop`; the exit code for the process."""
        notifier = self.components.notifier
        self.events.add_callback(self._follow_agent, (StateChanged,))
        try:
            self._open_mute_switch()
            self._prefetch_for_mode()
            freeze_startup_objects()
            notifier.ready()
            self.ready.set()
            self._publish_idle()
            log.info(
                "ready: %s mode, microphone %s at %d Hz",
                MODE_LABELS[self.controller.mode],
                self.components.microphone.device_label or "(file)",
                self.ring.rate,
            )
            await self._main_loop()
        finally:
            notifier.stopping()
            notifier.status("stopping")
            await self._stop_session(timeout=SESSION_STOP_TIMEOUT)
            self.events.remove_callback(self._follow_agent)
            for task in list(self._background):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            gc.unfreeze()  # what starting made can be collected again (a test's next daemon)
        return ExitCode.OK

    def stop(self) -> None:
        """Ask the daemon to stop (signal handlers call this)."""
        self._stop.set()

    def press(self, kind: str = "short", at: float | None = None) -> None:
        """Inject a gesture as if the button did it (demo, tests)."""
        gesture = Gesture(kind, time.monotonic() if at is None else at)
        self.components.gestures.put_nowait(gesture)

    async def wait_idle(self) -> None:
        """Wait until no session runs."""
        while self._session_task is not None:
            await asyncio.shield(self._session_task)
            await asyncio.sleep(0)

    # ------------------------------------------------------------ main loop

    async def _main_loop(self) -> None:
        gestures = self.components.gestures
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                get = asyncio.create_task(gestures.get())
                done, _ = await asyncio.wait({get, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    self._carry_out(self.controller.on_gesture(get.result()))
                else:
                    get.cancel()
        finally:
            stop_wait.cancel()

    def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StartSession):
                self._start_session(action)
            elif isinstance(action, StopSession):
                if self._session is not None:
                    self._session.request_stop()
            elif isinstance(action, Interrupt):
                if self._session is not None:
                    self._session.interrupt()
            elif isinstance(action, EndTurn):
                if isinstance(self._session, LiveControls):
                    self._session.end_turn()
            elif isinstance(action, ModeChanged):
                log.info("mode: %s", MODE_LABELS[action.mode])
                self._prefetch_for_mode()
                self._publish_idle()
            elif isinstance(action, Earcon):
                self.play_earcon(action.name)
            elif isinstance(action, ChangeVolume):
                if self.person is not None:
                    self.person.step_volume(action.steps, "button")
            elif isinstance(action, ToggleMute):
                if self.person is not None:
                    self.set_muted(not self.person.muted, "button")
            elif isinstance(action, MutedPress):
                self._tell_muted()

    # ------------------------------------------------------------ volume and mute

    @property
    def person(self) -> PersonControls | None:
        return self.components.person

    def set_muted(self, muted: bool, source: ControlSource) -> bool:
        """Mute or unmute the microphone; False when it already was so.

        A running session ends at the sample the mute began, so nothing said
        after it is sent or spooled; capture itself runs on (the watchdog).
        """
        person = self.person
        if person is None or not person.set_muted(muted, source):
            return False
        self.controller.muted = person.muted
        if muted and self._session is not None:
            self.controller.request_stop()
            self._session.request_stop(end_index=person.muted_from)
        self._publish_idle()
        return True

    def _tell_muted(self) -> str:
        """A press came while muted: the earcon and the page say why nothing starts (returned)."""
        self.play_earcon("muted")
        mode = self.controller.mode
        detail = f"muted: unmute to start {MODE_LABELS.get(mode, mode)}"
        self.events.publish(StateChanged(state="muted", mode=mode, detail=detail))
        return detail

    def _open_mute_switch(self) -> None:
        switch = self.components.mute_switch
        if switch is None:
            return
        try:
            switch.start(lambda muted: self.set_muted(muted, "switch"))
        except Exception as exc:  # no GPIO on this machine: say so, keep running
            log.error("mute switch unavailable (%s); mute from the page or a gesture", exc)
            self.events.publish(
                ErrorReported(message=f"mute switch unavailable: {exc}", where="button")
            )

    def _follow_agent(self, published: Published[Event]) -> None:
        """The agent's speaking state drives the controller's "interrupt" rule."""
        event = published.event
        if isinstance(event, StateChanged):
            self.controller.on_agent_speaking(event.state == "agent_speaking")

    def play_earcon(self, name: str) -> None:
        """Play a short sound; session notices map onto the device's few earcons."""
        name = NOTICE_EARCONS.get(name, name)
        earcons = self.components.earcons
        if earcons is not None:
            try:
                earcons.play(name)
            except Exception:
                log.exception("earcon %s failed", name)

    def _prefetch_for_mode(self) -> None:
        """Keep a token ready only for the mode in use: a token nobody uses is a wasted mint."""
        for mode, tokens in self.components.tokens.items():
            if mode == self.controller.mode:
                tokens.start()
            else:
                self._in_background(tokens.aclose())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ sessions

    def _start_session(self, action: StartSession) -> None:
        start_index = self.ring.preroll_index(action.press_time, self.config.audio.preroll_seconds)
        if self.person is not None:  # the pre-roll never reaches back into a mute
            start_index = max(start_index, min(self.person.unmuted_at, self.ring.write_index))
        session = self.components.sessions[action.mode](self.play_earcon)
        self._session = session
        self._session_task = asyncio.create_task(
            self._run_session(session, action.mode, start_index), name=f"session-{action.mode}"
        )
        self._session_task.add_done_callback(collect_session_garbage)

    async def _run_session(self, session: Session, mode: str, start_index: int) -> None:
        account: Account | None = None
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
            if account is not None and account.spooled_samples:
                # Part of what was said could not be delivered live: it is kept for later.
                self.play_earcon("saved")
            self._session = None
            self._session_task = None
            if self.components.uploader is not None:
                self.components.uploader.wake()  # a recording, or a live gap, may be ready
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
        from appliance.web.snapshot import account_section, spool_section, spool_unavailable

        parts = self.components
        out: dict[str, Any] = {"mode": self.controller.mode, "phase": self.controller.phase.value}
        last = next((a for a in reversed(self.accounts) if a is not None), None)
        if last is not None:
            out["last_session"] = account_section(last)
        out["overflows"] = parts.microphone.overflows
        out["level_dbfs"] = round(parts.microphone.level_dbfs().rms_dbfs, 1)
        if parts.spool is not None:
            out["spool"] = spool_section(parts.spool)
        elif parts.spool_problem is not None:
            out["spool"] = spool_unavailable(parts.spool_problem)
        if parts.uploader is not None:
            out["connection"] = "offline" if parts.uploader.offline else "online"
        if parts.outbox is not None:
            from appliance.web.snapshot import outbox_section

            out["outbox"] = outbox_section(parts.outbox)
        if parts.summaries is not None:
            from appliance.web.snapshot import summaries_section

            out["summaries"] = summaries_section(parts.summaries.jobs)
        elif parts.config.summary.enabled:
            from appliance.web.snapshot import summaries_unavailable

            out["summaries"] = summaries_unavailable(
                "summaries need the API key on the device (the LLM Gateway takes no "
                "temporary token, and a token broker does not forward it)"
                if parts.config.api_key is None
                else "summaries need the spool, which is unavailable"
            )
        if self.person is not None:
            out.update(self.person.snapshot())
        return out

    async def web_control(self, action: str, args: dict[str, str]) -> dict[str, Any]:
        """Controls from the local page (token-checked there): the same paths as the button."""
        return await self.control(action, args, "page")

    async def mqtt_control(self, action: str, args: dict[str, str]) -> dict[str, Any]:
        """Commands from MQTT (checked by ``appliance.mqtt.commands``): as the page's."""
        return await self.control(action, args, "mqtt")

    async def control(
        self, action: str, args: dict[str, str], source: ControlSource
    ) -> dict[str, Any]:
        """A control from the page or MQTT (``source``): the same paths as the button."""
        if action in PERSON_ACTIONS:
            return self._person_control(action, args, source)
        controller = self.controller
        parts = self.components
        refusals = {
            "start_session": "a session is already running",
            "stop_session": "no session is running",
            "interrupt": "the agent is not speaking",
            "end_turn": "no live session is running",
        }
        if action in refusals or action in ("switch_mode", "set_mode"):
            if action == "start_session":
                actions = controller.request_start(time.monotonic())
            elif action == "stop_session":
                actions = controller.request_stop()
            elif action == "interrupt":
                actions = controller.request_interrupt()
            elif action == "end_turn":
                actions = controller.request_end_turn()
            elif action == "set_mode":
                mode = args.get("mode", "")
                if mode not in MODE_LABELS:
                    return {"ok": False, "error": f"unknown mode {mode[:40]!r}"}
                actions = controller.request_mode(mode)
            else:
                actions = controller.request_switch_mode()
            if any(isinstance(a, MutedPress) for a in actions):
                # The answer says what the feed's state says, whichever the page shows last.
                return {"ok": False, "error": self._tell_muted()}
            if not actions and action in refusals:
                return {"ok": False, "error": refusals[action]}
            self._carry_out(actions)
        elif action == "retune":
            return self._retune(args)
        elif action == "retry_spool":
            if parts.spool is None:
                return {"ok": False, "error": "no spool"}
            ident = args.get("id")
            count = (
                (1 if parts.spool.retry(ident) else 0) if ident else len(parts.spool.retry_all())
            )
            if parts.uploader is not None:
                parts.uploader.wake()
            return {"ok": True, "retried": count}
        return {"ok": True, "mode": controller.mode, "phase": controller.phase.value}

    def _person_control(
        self, action: str, args: dict[str, str], source: ControlSource
    ) -> dict[str, Any]:
        person = self.person
        if person is None:
            return {"ok": False, "error": "volume and mute are not available"}
        if action == "set_volume":
            text = args.get("percent", "")
            if not text.isdigit() or int(text) > 100:
                return {"ok": False, "error": "percent must be a whole number from 0 to 100"}
            person.set_volume(int(text), source)
        elif action in ("volume_up", "volume_down"):
            person.step_volume(1 if action == "volume_up" else -1, source)
        else:
            muted = {"mute": True, "unmute": False}.get(action, not person.muted)
            self.set_muted(muted, source)
        return {"ok": True, **person.snapshot()}

    def _retune(self, args: dict[str, str]) -> dict[str, Any]:
        """The page's new key terms or turn silences for the running live session.

        ``keyterms`` is a JSON array of strings (the wire's own form); the silences
        are whole ms. Nothing given keeps a value; ValueError (400) if refused.
        """
        from appliance.web.retune import retune_request

        session = self._session
        if not isinstance(session, LiveControls):
            return {"ok": False, "error": "no live session is running"}
        tuning = session.retune(**retune_request(args))
        return {
            "ok": True,
            "keyterms_prompt": list(tuning.keyterms_prompt),
            "min_turn_silence": tuning.min_turn_silence,
            "max_turn_silence": tuning.max_turn_silence,
        }

    def _publish_idle(self) -> None:
        if self._session is None:
            if self.controller.muted:
                mode = self.controller.mode
                detail = f"muted ({MODE_LABELS.get(mode, mode)})"
                self.events.publish(StateChanged(state="muted", mode=mode, detail=detail))
            else:
                self.events.publish(idle(self.controller.mode))
