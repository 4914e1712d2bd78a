"""One button, several meanings: short, long and double press, plus raw press/release.

:class:`GestureRecognizer` is pure: it takes press/release timestamps and the
passing of time, and returns :class:`~appliance.controller.Gesture` values.
No threads, no sleeps, so every timing rule is tested exactly.

:class:`ButtonGestures` binds it to a gpiozero ``Button`` and/or the keyboard.
gpiozero calls back from its own threads; every edge is handed to the asyncio
loop with ``call_soon_threadsafe`` and the recogniser only ever runs there.
Gestures come out of ``async for gesture in buttons`` (or an ``on_gesture``
callback). Which action a gesture triggers in which mode is the
:class:`~appliance.controller.Controller`'s business, not this module's.

Debouncing is done here in software, the same for every pin factory (the
mock included): an edge within ``bounce`` of the last accepted edge is held
back, and the level that has settled when the bounce window closes is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

from appliance.config import ButtonConfig
from appliance.controller import Gesture

log = logging.getLogger(__name__)

#: Gestures waiting for a consumer; beyond this the oldest are dropped (a stuck
#: consumer must not grow memory because someone leans on the button).
MAX_PENDING_GESTURES = 32

KEYBOARD_HELP = "keyboard button: Enter = short press, l = long, d = double, p/r = press/release"


class _Phase(enum.Enum):
    IDLE = "idle"
    DOWN = "down"  # first press held, long-press timer running
    LONG_HELD = "long_held"  # long press already reported; waiting for release
    WAIT_SECOND = "wait_second"  # released after a short press; double-press window open
    SECOND_DOWN = "second_down"  # double already reported; waiting for release


class GestureRecognizer:
    """Turns press/release times into gestures (pure; the caller keeps time).

    Every press yields ``press`` and every release ``release`` (for
    hold-to-talk). On top: ``long`` as soon as a press has been held for
    ``long_press_seconds`` (while still held, so the user gets feedback);
    ``double`` on the second press within ``double_press_seconds`` of a short
    press's release; ``short`` once that window has passed, or at the release
    itself when double presses are not wanted (``double_enabled = False``),
    so a short press does not wait for nothing.

    Call :meth:`expire` at :attr:`deadline` (or later); it reports what
    became due. ``at`` of every gesture is the time of the press that began it.
    """

    def __init__(
        self,
        long_press_seconds: float = 1.0,
        double_press_seconds: float = 0.4,
        bounce_seconds: float = 0.0,
    ) -> None:
        self.long_press_seconds = long_press_seconds
        self.double_press_seconds = double_press_seconds
        self.bounce_seconds = bounce_seconds
        self.double_enabled = double_press_seconds > 0
        self._phase = _Phase.IDLE
        self._pressed_at = 0.0  # press that began the current gesture
        self._timer: float | None = None  # long-press or double-press deadline
        self._accepted = False  # debounced level
        self._raw = False  # last level seen
        self._last_edge = float("-inf")  # time of the last accepted edge
        self._settle_at: float | None = None

    @classmethod
    def from_config(cls, config: ButtonConfig) -> GestureRecognizer:
        return cls(config.long_press_seconds, config.double_press_seconds, config.bounce_ms / 1000)

    @property
    def is_pressed(self) -> bool:
        """The debounced level."""
        return self._accepted

    @property
    def deadline(self) -> float | None:
        """When :meth:`expire` next has something to do, or None."""
        times = [t for t in (self._timer, self._settle_at) if t is not None]
        return min(times) if times else None

    # -- inputs -------------------------------------------------------------

    def press(self, t: float) -> list[Gesture]:
        return self._edge(True, t)

    def release(self, t: float) -> list[Gesture]:
        return self._edge(False, t)

    def expire(self, t: float) -> list[Gesture]:
        """Report what became due by time ``t`` (settled bounces, long press, double window)."""
        out: list[Gesture] = []
        # Handle due events in time order: a settled edge may change what the timer means.
        while True:
            deadline = self.deadline
            if deadline is None or deadline > t:
                return out
            if self._settle_at is not None and self._settle_at <= deadline:
                settled, self._settle_at = self._settle_at, None
                if self._raw != self._accepted:
                    out += self._accept(self._raw, settled)
                continue
            self._timer = None
            if self._phase is _Phase.DOWN:
                self._phase = _Phase.LONG_HELD
                out.append(Gesture("long", self._pressed_at))
            elif self._phase is _Phase.WAIT_SECOND:
                self._phase = _Phase.IDLE
                out.append(Gesture("short", self._pressed_at))

    # -- rules --------------------------------------------------------------

    def _edge(self, pressed: bool, t: float) -> list[Gesture]:
        out = self.expire(t)  # anything that fell due before this edge happened first
        self._raw = pressed
        if t - self._last_edge < self.bounce_seconds:
            self._settle_at = self._last_edge + self.bounce_seconds
            return out
        if pressed == self._accepted:
            return out
        return out + self._accept(pressed, t)

    def _accept(self, pressed: bool, t: float) -> list[Gesture]:
        self._accepted = pressed
        self._last_edge = t
        if pressed:
            out = [Gesture("press", t)]
            if self._phase is _Phase.WAIT_SECOND:
                self._phase = _Phase.SECOND_DOWN
                self._timer = None
                out.append(Gesture("double", self._pressed_at))
            else:
                self._phase = _Phase.DOWN
                self._pressed_at = t
                self._timer = t + self.long_press_seconds
            return out
        out = [Gesture("release", t)]
        if self._phase is _Phase.DOWN:
            if self.double_enabled and self.double_press_seconds > 0:
                self._phase = _Phase.WAIT_SECOND
                self._timer = t + self.double_press_seconds
            else:
                self._phase = _Phase.IDLE
                self._timer = None
                out.append(Gesture("short", self._pressed_at))
        else:  # LONG_HELD or SECOND_DOWN: the gesture was already reported
            self._phase = _Phase.IDLE
            self._timer = None
        return out


def keyboard_gesture(line: str) -> str | None:
    """The gesture kind a line typed on stdin stands for (None: not a button line)."""
    word = line.strip().lower()
    return {
        "": "short",
        "s": "short",
        "l": "long",
        "long": "long",
        "d": "double",
        "double": "double",
        "p": "press",
        "r": "release",
    }.get(word)


class ButtonGestures:
    """Gestures from the GPIO button and/or the keyboard, delivered on the asyncio loop.

    Construct anywhere, :meth:`start` on the loop (it creates the gpiozero
    ``Button`` only when ``config.enabled``, and reads stdin only when
    ``config.keyboard``), then ``async for gesture in buttons`` or pass
    ``on_gesture``. ``wants_double`` is asked at each release whether the
    current mode gives a double press any meaning; when it does not, a short
    press is reported at once instead of after the double-press window.
    """

    def __init__(
        self,
        config: ButtonConfig,
        *,
        on_gesture: Callable[[Gesture], None] | None = None,
        wants_double: Callable[[], bool] | None = None,
        keyboard_stream: TextIO | None = None,
    ) -> None:
        self.config = config
        self.recognizer = GestureRecognizer.from_config(config)
        self._on_gesture = on_gesture
        self._wants_double = wants_double
        self._keyboard_stream = keyboard_stream
        self._keyboard_fd: int | None = None
        self._keyboard_buffer = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: deque[Gesture] = deque(maxlen=MAX_PENDING_GESTURES)
        self._wakeup: asyncio.Event | None = None
        self._closed = False
        self.button: Any = None  # gpiozero.Button when enabled
        self.dropped = 0

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        """Attach to the running loop; open the GPIO button and the keyboard if configured."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        if self.config.enabled:
            from gpiozero import Button  # imported only when a GPIO button is configured

            # bounce_time=None: debouncing happens in the recogniser, the same on every factory.
            self.button = Button(self.config.pin, pull_up=self.config.pull_up, bounce_time=None)
            self.button.when_pressed = self._gpio_pressed
            self.button.when_released = self._gpio_released
            log.info("button on GPIO%d (pull_up=%s)", self.config.pin, self.config.pull_up)
        if self.config.keyboard:
            stream = self._keyboard_stream or sys.stdin
            try:
                self._keyboard_fd = stream.fileno()
                self._loop.add_reader(self._keyboard_fd, self._keyboard_readable)
                log.info(KEYBOARD_HELP)
            except (OSError, ValueError, NotImplementedError) as exc:
                log.warning("keyboard button unavailable: %s", exc)
                self._keyboard_fd = None

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._keyboard_fd is not None and self._loop is not None:
            self._loop.remove_reader(self._keyboard_fd)
            self._keyboard_fd = None
        if self.button is not None:
            self.button.when_pressed = None
            self.button.when_released = None
            self.button.close()
            self.button = None
        if self._wakeup is not None:
            self._wakeup.set()

    # -- thread-safe inputs -------------------------------------------------

    def edge(self, pressed: bool, at: float | None = None) -> None:
        """A raw button edge from any thread (``at``: time.monotonic(), default now)."""
        at = time.monotonic() if at is None else at
        loop = self._loop
        if loop is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: shutting down
            loop.call_soon_threadsafe(self._on_edge, pressed, at)

    def inject(self, kind: str, at: float | None = None) -> None:
        """A finished gesture (keyboard, web page) from any thread."""
        at = time.monotonic() if at is None else at
        loop = self._loop
        if loop is None or self._closed:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._deliver, Gesture(kind, at))

    def _gpio_pressed(self) -> None:
        self.edge(True)

    def _gpio_released(self) -> None:
        self.edge(False)

    # -- on the loop --------------------------------------------------------

    def _on_edge(self, pressed: bool, at: float) -> None:
        if self._wants_double is not None and not pressed:
            self.recognizer.double_enabled = bool(self._wants_double())
        handler = self.recognizer.press if pressed else self.recognizer.release
        for gesture in handler(at):
            self._deliver(gesture)
        self._schedule()

    def _on_timer(self) -> None:
        self._timer = None
        for gesture in self.recognizer.expire(time.monotonic()):
            self._deliver(gesture)
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.recognizer.deadline
        if deadline is not None and self._loop is not None and not self._closed:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _deliver(self, gesture: Gesture) -> None:
        if self._closed:
            return
        if self._on_gesture is not None:
            try:
                self._on_gesture(gesture)
            except Exception:
                log.exception("gesture handler failed for %s", gesture.kind)
            return
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(gesture)
        if self._wakeup is not None:
            self._wakeup.set()

    def _keyboard_readable(self) -> None:
        assert self._keyboard_fd is not None
        try:
            chunk = os.read(self._keyboard_fd, 1024)
        except OSError:
            chunk = b""
        if not chunk:  # EOF: stdin closed (e.g. started without a terminal)
            assert self._loop is not None
            self._loop.remove_reader(self._keyboard_fd)
            self._keyboard_fd = None
            return
        self._keyboard_buffer += chunk
        *lines, self._keyboard_buffer = self._keyboard_buffer.split(b"\n")
        for raw in lines:
            kind = keyboard_gesture(raw.decode(errors="replace"))
            if kind is None:
                log.info(KEYBOARD_HELP)
                continue
            self._deliver(Gesture(kind, time.monotonic()))

    # -- consuming ----------------------------------------------------------

    async def get(self) -> Gesture:
        """The next gesture (raises ``asyncio.CancelledError`` only via cancellation)."""
        assert self._wakeup is not None, "start() first"
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._pending.popleft()

    def __aiter__(self) -> AsyncIterator[Gesture]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Gesture]:
        while True:
            try:
                yield await self.get()
            except StopAsyncIteration:
                return
