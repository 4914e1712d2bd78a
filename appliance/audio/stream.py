"""Shared life cycle of the PortAudio streams: state, liveness, and reopening after loss.

A USB microphone or speaker can vanish (unplugged, audio server restarted)
and come back.  Neither capture nor playback may take the process down with
it: a supervisor thread shows the stream to a :class:`StreamWatchdog` (which
tells a slow start from a dead device), and when it is lost closes it,
reports ``LOST``, and reopens with exponential backoff until the device is
back.  Subclasses say how to open the stream and what to do when it is lost.

PortAudio lists the devices only when it is initialised, and it stays
initialised while any stream holds it: a USB microphone that comes back under
a new card number is never found while the speaker stays open.  So a stream
whose device stays missing for ``rescan_after`` seconds has every other open
stream close and reopen with it (:func:`reinitialise_portaudio`): with all
of them closed PortAudio terminates, and the next open scans afresh.  The
others keep what they hold (the speaker its queued reply); only the moment
they were closed is missing.  The microphone does not yield (its audio is
what must not be lost, and a dead speaker would cost it a gap at every
retry), so a speaker back under a new name is found only when the
microphone reopens too.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Self

import pyaudio

from appliance.audio.watchdog import Health, StreamLimits, StreamWatchdog

log = logging.getLogger(__name__)

DEFAULT_RETRY_INITIAL = 0.5
DEFAULT_RETRY_MAX = 10.0
# How often the supervisor looks at a starting stream, and the least time between
# looks at a running one, which it looks at only when a stall could be due
# (StreamWatchdog.next_look: once a second with the 1 s stall timeout), so a hung
# stream is still found within ~1.25 s.
SUPERVISOR_PERIOD = 0.25

# Pa_Initialize/Pa_Terminate and device enumeration are not thread-safe: two
# supervisors reopening at once (capture and playback after the audio server
# came back) aborted the process.  Every PortAudio set-up and tear-down call
# takes this lock; audio callbacks never do.
PORTAUDIO_LOCK = threading.RLock()

# A device missing this long makes the other streams re-initialise PortAudio with it
# when a reopen fails (then at most once per attempt, which the backoff spaces out:
# every retry_max while it stays missing).
DEFAULT_RESCAN_AFTER = 2.0


class StreamState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"  # opening, or not yet delivering blocks steadily
    RUNNING = "running"
    LOST = "lost"  # device gone or stream dead; retrying


StateCallback = Callable[[StreamState, str], None]


class StreamStatus:
    """State and liveness every audio endpoint (device or file) exposes.

    ``last_callback_time`` (time.monotonic(), 0.0 before the first block) and
    ``blocks`` are plain attributes written by the audio thread: cheap to read
    for LEDs, ``appliance check`` and the watchdog.
    """

    def __init__(self, on_state: StateCallback | None = None) -> None:
        self.last_callback_time = 0.0
        self.blocks = 0
        self.state = StreamState.STOPPED
        self.state_detail = ""
        self.losses = 0
        self._on_state = on_state

    def _set_state(self, state: StreamState, detail: str = "") -> None:
        if state == self.state and detail == self.state_detail:
            return
        if state == StreamState.LOST and self.state != StreamState.LOST:
            self.losses += 1
        self.state, self.state_detail = state, detail
        if self._on_state is not None:
            try:
                self._on_state(state, detail)
            except Exception:
                log.exception("audio state callback failed")

    @property
    def reopening(self) -> bool:
        """Whether the device is lost and being reopened: a known state, not a hang."""
        return False

    def seconds_since_last_block(self, now: float | None = None) -> float:
        """Liveness: how long ago the last block was handled (inf before the first)."""
        if not self.last_callback_time:
            return float("inf")
        return (time.monotonic() if now is None else now) - self.last_callback_time


class SupervisedStream(StreamStatus):
    """A PortAudio callback stream that a supervisor thread reopens after loss."""

    kind = "stream"  # for thread names and log lines
    #: Whether another stream's rescan may close and reopen this one.
    yields_to_rescan = True

    def __init__(
        self,
        block_ms: int,
        on_state: StateCallback | None,
        limits: StreamLimits | None,
        retry_initial: float,
        retry_max: float,
    ) -> None:
        super().__init__(on_state)
        self.block_ms = block_ms
        self.watchdog = StreamWatchdog(block_ms / 1000, limits)
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.device_label = ""
        self._pa: pyaudio.PyAudio | None = None
        self._stream: pyaudio.Stream | None = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.rescan_after = DEFAULT_RESCAN_AFTER
        self.reinitialised = 0  # closed and reopened so that PortAudio could rescan
        self._lost_since: float | None = None

    @property
    def reopening(self) -> bool:
        supervisor = self._supervisor
        return self.state is StreamState.LOST and supervisor is not None and supervisor.is_alive()

    # Subclass hooks ----------------------------------------------------

    def _open_stream(self, pa: pyaudio.PyAudio, first: bool) -> pyaudio.Stream:
        """Open and start the PortAudio stream (set ``device_label``)."""
        raise NotImplementedError

    def _on_lost(self) -> None:
        """Called (supervisor thread) after a lost stream was closed."""

    # Life cycle --------------------------------------------------------

    def start(self) -> None:
        """Open the device and start; raises if the first open fails."""
        if self._supervisor is not None:
            return
        self._stop.clear()
        self._set_state(StreamState.STARTING, "opening")
        try:
            self._open(first=True)
        except Exception:
            self._close()
            self._set_state(StreamState.STOPPED, "open failed")
            raise
        self._supervisor = threading.Thread(
            target=self._supervise, name=f"audio-{self.kind}-supervisor", daemon=True
        )
        with PORTAUDIO_LOCK:
            _OPEN_STREAMS.add(self)
        self._supervisor.start()

    def stop(self) -> None:
        with PORTAUDIO_LOCK:
            _OPEN_STREAMS.discard(self)
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        self._close()
        self._set_state(StreamState.STOPPED)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _open(self, first: bool) -> None:
        with PORTAUDIO_LOCK:
            self._pa = pyaudio.PyAudio()
            self.watchdog.opened(time.monotonic(), self.blocks)
            self._stream = self._open_stream(self._pa, first)
        log.info("%s opened %s, %d ms blocks", self.kind, self.device_label, self.block_ms)

    def _close(self) -> None:
        with PORTAUDIO_LOCK:
            self._close_locked()

    def _close_locked(self) -> None:
        stream, self._stream = self._stream, None
        pa, self._pa = self._pa, None
        if stream is not None:
            try:
                stream.stop_stream()
            except Exception:
                log.debug("stop_stream failed", exc_info=True)
            try:
                stream.close()
            except Exception:
                log.debug("close failed", exc_info=True)
        if pa is not None:
            pa.terminate()

    def _stream_dead(self, now: float) -> str | None:
        """Why the open stream should be considered lost, or None while it starts or runs."""
        stream = self._stream
        if stream is None:
            return "no stream"
        try:
            active = stream.is_active()
        except Exception as exc:
            return f"stream error: {exc}"
        verdict = self.watchdog.observe(now, self.blocks, self.last_callback_time, active)
        return verdict.reason if verdict.health is Health.LOST else None

    def _next_look(self) -> float:
        """How long the supervisor may sleep before looking at the stream again."""
        if self._stream is None:
            return SUPERVISOR_PERIOD
        now = time.monotonic()
        return self.watchdog.next_look(now, self.last_callback_time, SUPERVISOR_PERIOD)

    def _supervise(self) -> None:
        delay = self.retry_initial
        while not self._stop.wait(self._next_look()):
            if self._stream is not None:
                with PORTAUDIO_LOCK:  # a rescan may be closing and reopening this stream
                    reason = self._stream_dead(time.monotonic())
                    if reason is not None:
                        log.warning("%s lost: %s (%s)", self.kind, reason, self.device_label)
                        self._close()
                        self._on_lost()
                if reason is None:
                    if self.watchdog.running and self.state != StreamState.RUNNING:
                        log.info(
                            "%s running %.1f s after opening",
                            self.kind,
                            time.monotonic() - self.watchdog.opened_at,
                        )
                        self._set_state(StreamState.RUNNING, self.device_label)
                        delay = self.retry_initial
                        self._lost_since = None
                    continue
                self._lost_since = self._lost_since or time.monotonic()
                self._set_state(StreamState.LOST, reason)
            # Reopen with exponential backoff.
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.retry_max)
            try:
                with PORTAUDIO_LOCK:
                    try:
                        self._open(first=False)
                    except Exception:
                        self._close_locked()
                        lost_for = time.monotonic() - (self._lost_since or time.monotonic())
                        if lost_for < self.rescan_after or not reinitialise_portaudio(self):
                            raise
                        self._open(first=False)  # on a PortAudio that listed devices afresh
                self._set_state(StreamState.STARTING, "reopened")
            except Exception as exc:
                self._close()
                self._lost_since = self._lost_since or time.monotonic()
                log.info("%s reopen failed: %s; retry in %.1f s", self.kind, exc, delay)
                self._set_state(StreamState.LOST, f"reopen failed: {exc}")


# Every started stream, for :func:`reinitialise_portaudio` (changed under PORTAUDIO_LOCK).
_OPEN_STREAMS: weakref.WeakSet[SupervisedStream] = weakref.WeakSet()


def reinitialise_portaudio(requester: SupervisedStream) -> int:
    """Close every other open stream so PortAudio terminates, then reopen them.

    The next ``PyAudio()`` then initialises PortAudio afresh and lists the
    devices as they are now.  What each stream holds survives: ``_on_lost``
    is all a closed stream is told (the speaker keeps its queue).  Returns how
    many were closed: 0 when none held PortAudio (the requester's own next
    open scans afresh anyway) or one that holds it does not yield.
    """
    with PORTAUDIO_LOCK:
        others = [s for s in list(_OPEN_STREAMS) if s is not requester and s._pa is not None]
        if not others:
            return 0  # nobody else holds PortAudio: the requester's own open rescans
        if not all(other.yields_to_rescan for other in others):
            return 0  # PortAudio stays initialised for the one that does not yield
        log.info(
            "%s device still missing: re-initialising PortAudio to rescan (closing %s)",
            requester.kind,
            ", ".join(other.kind for other in others),
        )
        for other in others:
            other._close_locked()
            other._on_lost()
        for other in others:
            other.reinitialised += 1
            try:
                other._open(first=False)
            except Exception as exc:
                other._close_locked()
                other._lost_since = time.monotonic()
                other._set_state(StreamState.LOST, f"reopen after a rescan failed: {exc}")
                continue
            other._set_state(StreamState.STARTING, "reopened after a rescan")
        return len(others)
