"""The in-process event feed: what the device is doing, for anyone who listens.

Sessions publish events (state changes, partial and final turns, agent speech,
spool progress, errors); the LEDs, earcons, systemd status line and the local
web page subscribe. Publishing never blocks and never fails: a slow subscriber
loses its oldest events (and is told how many), it never stalls the audio path.
Publishing is safe from any thread; subscribers consume on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

DEFAULT_QUEUE_LENGTH = 256


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing that happened. ``kind`` is a dotted name such as ``turn.final``."""

    kind: str
    data: dict[str, Any]
    time: float  # time.time(), for people and pages
    seq: int


# Event kinds used across the daemon (a page or LED driver may rely on these).
STATE = "state"  # data: state (idle|connecting|listening|agent_speaking|recording|offline|error),
#                  mode, detail
TURN_PARTIAL = "turn.partial"  # data: session_id, turn_order, text, words, speaker?
TURN_FINAL = "turn.final"  # data: session_id, turn_order, text, words, speaker?
AGENT_USER = "agent.user"  # data: text, final
AGENT_REPLY = "agent.reply"  # data: text, reply_id, interrupted
SPOOL = "spool"  # data: waiting, bytes, states, notice; or available=False and problem
UPLOAD_PROGRESS = "upload.progress"  # data: recording_id, sent, total
SESSION = "session"  # data: phase (started|ended), mode, session_id, account
ERROR = "error"  # data: message, where
LEVEL = "level"  # data: dbfs


class EventBus:
    """Fan-out of events to any number of subscribers, each with its own bounded queue."""

    def __init__(self, queue_length: int = DEFAULT_QUEUE_LENGTH) -> None:
        self._queue_length = queue_length
        self._subscribers: list[_Subscription] = []
        self._callbacks: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self.last: dict[str, Event] = {}

    def publish(self, kind: str, **data: Any) -> Event:
        """Deliver an event to every subscriber; safe from any thread, never blocks."""
        event = Event(kind, data, time.time(), next(self._seq))
        with self._lock:
            self.last[kind] = event
            subscribers = list(self._subscribers)
            callbacks = list(self._callbacks)
        for sub in subscribers:
            sub.offer(event)
        for callback in callbacks:
            callback(event)
        return event

    def add_callback(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` synchronously on publish (keep it quick and non-blocking)."""
        with self._lock:
            self._callbacks.append(callback)

    def subscribe(self, kinds: tuple[str, ...] | None = None) -> _Subscription:
        """A subscription on the running loop; iterate it with ``async for``."""
        sub = _Subscription(self, asyncio.get_running_loop(), kinds, self._queue_length)
        with self._lock:
            self._subscribers.append(sub)
        return sub

    def _remove(self, sub: _Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)


class _Subscription:
    def __init__(
        self,
        bus: EventBus,
        loop: asyncio.AbstractEventLoop,
        kinds: tuple[str, ...] | None,
        length: int,
    ) -> None:
        self._bus = bus
        self._loop = loop
        self._kinds = kinds
        self._queue: deque[Event] = deque(maxlen=length)
        self._wakeup = asyncio.Event()
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self._kinds is not None and not event.kind.startswith(self._kinds):
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(event)
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:  # loop closed: nobody is listening any more
            self._bus._remove(self)

    async def get(self) -> Event:
        while not self._queue:
            self._wakeup.clear()
            if self._queue:
                break
            await self._wakeup.wait()
        return self._queue.popleft()

    def close(self) -> None:
        self._bus._remove(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        try:
            while True:
                yield await self.get()
        finally:
            self.close()
