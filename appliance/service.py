"""Talking to systemd: readiness, a human status line, and a watchdog that means something.

Everything here is a no-op when the process was not started by systemd (no
``$NOTIFY_SOCKET``), so the daemon runs the same on a desktop. The
notifications go through systemd-python's ``systemd.daemon.notify`` (imported
only when a socket is set), i.e. libsystemd's own ``sd_notify``.

The watchdog ping is sent from the asyncio loop, and only while the capture
thread is demonstrably alive (its last callback is recent). A blocked loop or
a wedged PortAudio thread therefore stops the pings and systemd restarts the
service (``WatchdogSec=`` + ``Restart=on-failure``): a hung appliance is worse
than one that restarts in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from appliance.events import Event, EventBus, SpoolStatus, StateChanged
from appliance.modes import MODE_LABELS

log = logging.getLogger(__name__)

#: After this long without a capture callback the capture thread counts as dead.
DEFAULT_CAPTURE_STALE_SECONDS = 2.0
#: Before the first capture callback arrives (PortAudio/PulseAudio may take ~1.5 s
#: after open), the capture counts as alive for this long after the watchdog started.
DEFAULT_FIRST_CAPTURE_GRACE_SECONDS = 10.0
#: The STATUS= line is at most this long (systemctl status shows one line).
MAX_STATUS_LENGTH = 200

Notify = Callable[[str], object]
Liveness = Callable[[], float]


def _sd_notify(message: str) -> None:
    """Send one notification through libsystemd (no-op without $NOTIFY_SOCKET)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    from systemd import daemon  # imported lazily: only under systemd

    daemon.notify(message)


class ServiceNotifier:
    """``sd_notify`` for the daemon: READY, a deduplicated STATUS, WATCHDOG, STOPPING.

    ``notify`` defaults to libsystemd; tests may pass their own callable. Errors
    while notifying are logged once and never raised: telling systemd about our
    state must not be able to take the appliance down.
    """

    def __init__(self, notify: Notify | None = None) -> None:
        self._notify = notify or _sd_notify
        self.last_status: str | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """True when systemd listens (a socket is set) or a custom sender is used."""
        return self._notify is not _sd_notify or bool(os.environ.get("NOTIFY_SOCKET"))

    def _send(self, message: str) -> None:
        try:
            self._notify(message)
        except Exception as exc:  # never let a notification kill the daemon
            if not self._failed:
                log.warning("systemd notification failed: %s", exc)
                self._failed = True

    def ready(self, status: str | None = None) -> None:
        """The daemon is up (capture running, controls attached): ``READY=1``."""
        if status is not None and status != self.last_status:
            self.last_status = status
            self._send(f"READY=1\nSTATUS={status}")
        else:
            self._send("READY=1")

    def status(self, text: str) -> None:
        """Keep ``systemctl status`` showing what the device does; repeats are not sent."""
        text = " ".join(text.split())[:MAX_STATUS_LENGTH]
        if text == self.last_status:
            return
        self.last_status = text
        self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        """One keep-alive ping: ``WATCHDOG=1``."""
        self._send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        """Shutdown has begun (sessions are closing, the spool is being synced)."""
        message = "STOPPING=1"
        if status is not None:
            self.last_status = status
            message += f"\nSTATUS={status}"
        self._send(message)

    # -- following the event bus --------------------------------------------

    async def follow(self, bus: EventBus) -> None:
        """Keep STATUS= in step with state and spool events until cancelled."""
        tracker = StatusTracker()
        for kind in (SpoolStatus, StateChanged):
            latest = bus.latest(kind)
            if latest is not None:
                tracker.update(latest.event)
        subscription = bus.subscribe((StateChanged, SpoolStatus))
        try:
            if tracker.state is not None:
                self.status(tracker.line())
            async for published in subscription:
                if tracker.update(published.event):
                    self.status(tracker.line())
        finally:
            subscription.close()


def status_line(state: str, mode: str | None = None, detail: str = "", waiting: int = 0) -> str:
    """The human STATUS= line for a state event (what ``systemctl status`` shows).

    >>> status_line("idle", "live")
    'idle, live transcription'
    >>> status_line("offline", waiting=3)
    'offline, 3 recordings waiting'
    """
    if state == "idle":
        text = f"idle, {MODE_LABELS.get(mode, mode)}" if mode else "idle"
        if waiting:
            text += f", {_recordings(waiting)} waiting"
        return text
    if state == "offline":
        return f"offline, {_recordings(waiting)} waiting" if waiting else "offline"
    if state == "error":
        return detail or "error"
    text = state.replace("_", " ")
    return f"{text}, {detail}" if detail else text


def _recordings(n: int) -> str:
    return f"{n} recording" if n == 1 else f"{n} recordings"


class StatusTracker:
    """Remembers the latest state and spool backlog; renders the status line."""

    def __init__(self) -> None:
        self.state: str | None = None
        self.mode: str | None = None
        self.detail = ""
        self.waiting = 0
        self.spool_note = ""  # the spool unavailable, or repaired at start: said on every line

    def update(self, event: Event) -> bool:
        """Take one event; True if the status line may have changed."""
        if isinstance(event, StateChanged):
            self.state = event.state
            self.mode = event.mode
            self.detail = event.detail
            return True
        if isinstance(event, SpoolStatus):
            note = _spool_note(event)
            waiting = event.waiting if event.available else None
            if note == self.spool_note and (waiting is None or waiting == self.waiting):
                return False
            self.spool_note = note
            if waiting is not None:
                self.waiting = waiting
            return self.state is not None
        return False

    def line(self) -> str:
        text = status_line(self.state or "idle", self.mode, self.detail, self.waiting)
        return f"{text}; {self.spool_note}" if self.spool_note else text


def _spool_note(event: SpoolStatus) -> str:
    if not event.available:
        return f"spool unavailable: {event.problem or 'unknown reason'}"
    return f"spool {event.notice}" if event.notice else ""


# --------------------------------------------------------------------------
# Watchdog


def watchdog_interval(environ: Mapping[str, str] | None = None, pid: int | None = None) -> float:
    """Seconds between pings (half of ``$WATCHDOG_USEC``), or 0.0 when no watchdog is set.

    ``$WATCHDOG_PID``, when present, must name this process (a child that
    inherited the environment must not ping on its parent's behalf).
    """
    environ = os.environ if environ is None else environ
    pid = os.getpid() if pid is None else pid
    raw = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return 0.0
    if usec <= 0:
        return 0.0
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return 0.0
        except ValueError:
            return 0.0
    return usec / 2_000_000


class CaptureLiveness(Protocol):
    """What the watchdog reads of the capture (every audio source has both)."""

    #: time.monotonic() of the last block; 0.0 before the first.
    last_callback_time: float

    @property
    def reopening(self) -> bool: ...


def capture_liveness(source: CaptureLiveness) -> Liveness:
    """A liveness callable for an ``appliance.audio.capture`` source.

    It returns ``source.last_callback_time``, except while the device is lost
    and being reopened: an unplugged microphone is a known condition (STATUS
    says "microphone missing"), not a hang, and a restart loop would not bring
    it back.
    """

    def last_alive() -> float:
        if source.reopening:
            return time.monotonic()
        return source.last_callback_time

    return last_alive


class Watchdog:
    """Sends ``WATCHDOG=1`` every ``interval`` seconds while the loop and the capture live.

    ``capture_alive`` returns the monotonic time of the last capture callback
    (0.0 before the first); when that is older than ``stale_after`` the pings
    stop. The pinging coroutine runs on the event loop, so a blocked loop stops
    them too. ``interval`` defaults to half of ``$WATCHDOG_USEC``; with no
    watchdog configured :meth:`start` does nothing.
    """

    def __init__(
        self,
        notifier: ServiceNotifier,
        capture_alive: Liveness | None = None,
        *,
        interval: float | None = None,
        stale_after: float = DEFAULT_CAPTURE_STALE_SECONDS,
        first_capture_grace: float = DEFAULT_FIRST_CAPTURE_GRACE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.notifier = notifier
        self.capture_alive = capture_alive
        self.interval = watchdog_interval() if interval is None else interval
        self.stale_after = stale_after
        self.first_capture_grace = first_capture_grace
        self._clock = clock
        self._started = clock()
        self._task: asyncio.Task[None] | None = None
        self.pings = 0
        self.withheld = 0
        self.unhealthy_reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    def healthy(self, now: float | None = None) -> tuple[bool, str]:
        """Whether a ping is deserved now, and if not, why (pure; no I/O)."""
        if self.capture_alive is None:
            return True, ""
        now = self._clock() if now is None else now
        last = self.capture_alive()
        if not last:
            if now - self._started <= self.first_capture_grace:
                return True, ""
            return False, f"no capture callback {now - self._started:.1f} s after start"
        age = now - last
        if age > self.stale_after:
            return False, f"last capture callback {age:.1f} s ago"
        return True, ""

    def tick(self, now: float | None = None) -> bool:
        """Ping if healthy; log once when pings stop and when they resume."""
        ok, reason = self.healthy(now)
        if ok:
            if self.unhealthy_reason is not None:
                log.warning("watchdog: capture alive again, pings resume")
                self.unhealthy_reason = None
            self.notifier.watchdog()
            self.pings += 1
            return True
        if self.unhealthy_reason is None:
            log.error("watchdog: withholding pings, systemd will restart us: %s", reason)
        self.unhealthy_reason = reason
        self.withheld += 1
        return False

    async def run(self) -> None:
        """Ping at ``interval`` until cancelled (the first ping goes out at once)."""
        if not self.enabled:
            return
        self._started = self._clock()
        while True:
            self.tick()
            await asyncio.sleep(self.interval)

    def start(self) -> asyncio.Task[None] | None:
        """Run :meth:`run` as a task on the current loop (None without a watchdog)."""
        if not self.enabled or self._task is not None:
            return self._task
        self._task = asyncio.get_running_loop().create_task(self.run(), name="watchdog")
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
