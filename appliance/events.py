"""The in-process event feed: what the device is doing, for anyone who listens.

Each kind of event is one frozen dataclass below; together they are the
schema, versioned by :data:`SCHEMA_VERSION` and documented in
``docs/events.md`` (the one place the page, the LEDs, the systemd status line
and integrations read). ``to_dict()`` is their JSON form.

Publishing never blocks and never fails: a slow subscriber loses its oldest
events (and is told how many), it never stalls the audio path. Publishing is
safe from any thread; subscribers consume on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
import typing
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import ClassVar, Generic, Literal, NotRequired, TypedDict, TypeVar

from appliance.modes import MODE_LABELS, Mode

DEFAULT_QUEUE_LENGTH = 256

#: Bumped when a kind or field is removed or changes meaning (adding one is compatible).
SCHEMA_VERSION = 2
#: Where the schema is written down for people.
SCHEMA_DOC = "docs/events.md"

State = Literal[
    "idle", "connecting", "listening", "agent_speaking", "recording", "offline", "error", "muted"
]
#: What a state is about: a button mode, or the uploader or spool under every mode.
StateSource = Literal["live", "agent", "record", "upload", "spool"]
SessionPhaseName = Literal["started", "ended", "resumed", "new_conversation"]
ErrorSource = Literal["capture", "button", "spool", "live", "agent", "record", "upload", "summary"]


class Word(TypedDict):
    """One word of a turn, its times in the session's stream (ms)."""

    text: str
    start_ms: int
    end_ms: int
    confidence: float
    speaker: NotRequired[str]  # late turns (the pre-recorded transcript's label)


#: A session's account in JSON form (seconds and samples; see each mode's account).
AccountDict = Mapping[str, object]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """One thing that happened; subclasses are the kinds of the schema."""

    kind: ClassVar[str]

    def __post_init__(self) -> None:
        for name, allowed in _choices(type(self)):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{self.kind}.{name}: {value!r} is not one of {allowed}")

    def data(self) -> dict[str, object]:
        """The fields, by name (shallow: nested lists and mappings are shared)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, object]:
        """The JSON form: ``{"kind", "v", ...fields}``."""
        return {"kind": self.kind, "v": SCHEMA_VERSION, **self.data()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class StateChanged(Event):
    """What the device is doing now (LEDs, status line, the page's state)."""

    kind: ClassVar[str] = "state"
    state: State
    mode: StateSource
    detail: str = ""


def idle(mode: str) -> StateChanged:
    """Nothing runs in ``mode`` (a button mode): what a press would start is the detail."""
    return StateChanged(
        state="idle", mode=typing.cast("Mode", mode), detail=MODE_LABELS.get(mode, mode)
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurnPartial(Event):
    """A live turn still being spoken; later partials and its final replace it."""

    kind: ClassVar[str] = "turn.partial"
    session_id: str
    turn_order: int
    text: str
    words: tuple[Word, ...] = ()
    speaker: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurnFinal(Event):
    """A finished live turn; ``late`` ones come from a spooled gap, without a turn order."""

    kind: ClassVar[str] = "turn.final"
    session_id: str
    turn_order: int | None
    text: str
    words: tuple[Word, ...] = ()
    speaker: str | None = None
    late: bool = False
    offset_ms: int | None = None  # late turns: where in the session's stream they start


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentUser(Event):
    """What the user said to the voice agent (partial until ``final``)."""

    kind: ClassVar[str] = "agent.user"
    text: str
    final: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentReply(Event):
    """What the voice agent said (``interrupted`` when a press cut it short)."""

    kind: ClassVar[str] = "agent.reply"
    text: str
    reply_id: str | None = None
    interrupted: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpoolStatus(Event):
    """The spool's backlog; ``available=False`` (with ``problem``) when it cannot be used."""

    kind: ClassVar[str] = "spool"
    available: bool = True
    problem: str | None = None
    waiting: int = 0
    bytes: int = 0
    states: Mapping[str, int] = dataclasses.field(default_factory=dict)
    notice: str | None = None
    full: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class UploadProgress(Event):
    """Bytes of one recording's audio sent to the service so far."""

    kind: ClassVar[str] = "upload.progress"
    recording_id: str
    sent: int
    total: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecordingTranscript(Event):
    """A spooled recording's transcript is stored beside its audio (with its ids)."""

    kind: ClassVar[str] = "recording.transcript"
    recording_id: str
    transcript_id: str
    origin: str  # what made the recording (a field recording, a live session's gap, ...)
    text: str
    session_id: str | None = None  # the live session a gap belongs to


SummarySource = Literal["session", "recording"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SummaryStored(Event):
    """A summary and action items of a live session or a field recording is stored beside its
    transcript (made by the LLM Gateway; ``truncated``: cut short by ``summary.max_tokens``)."""

    kind: ClassVar[str] = "summary"
    source: SummarySource
    source_id: str  # the session id or the recording id
    text: str
    model: str
    truncated: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class SessionPhase(Event):
    """A session started or ended; an agent conversation resumed or started anew."""

    kind: ClassVar[str] = "session"
    phase: SessionPhaseName
    mode: Mode
    session_id: str | None = None
    account: AccountDict | None = None  # phase "ended"
    reason: str = ""  # phase "new_conversation": why the old one could not resume


@dataclasses.dataclass(frozen=True, kw_only=True)
class ErrorReported(Event):
    """Something went wrong that a person should see (the page's recent errors)."""

    kind: ClassVar[str] = "error"
    message: str
    where: ErrorSource


@dataclasses.dataclass(frozen=True, kw_only=True)
class MicLevel(Event):
    """The microphone's level in dBFS."""

    kind: ClassVar[str] = "level"
    dbfs: float


#: Who changed the volume or the mute: the button, the mute switch, the page or MQTT.
ControlSource = Literal["button", "switch", "page", "mqtt", "start"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class VolumeChanged(Event):
    """The speaker's volume (replies and earcons), in percent and as the gain applied."""

    kind: ClassVar[str] = "volume"
    percent: int
    gain: float
    source: ControlSource


@dataclasses.dataclass(frozen=True, kw_only=True)
class MuteChanged(Event):
    """The microphone was muted or unmuted; ``muted_seconds``: muted so far since the start.

    Muted audio was never said to the device: no session sends or keeps it, and it is
    not counted as lost.
    """

    kind: ClassVar[str] = "mute"
    muted: bool
    source: ControlSource
    muted_seconds: float = 0.0


#: Every kind of event, in the order docs/events.md lists them.
SCHEMA: tuple[type[Event], ...] = (
    StateChanged,
    TurnPartial,
    TurnFinal,
    AgentUser,
    AgentReply,
    SpoolStatus,
    UploadProgress,
    RecordingTranscript,
    SummaryStored,
    SessionPhase,
    ErrorReported,
    MicLevel,
    VolumeChanged,
    MuteChanged,
)
KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in SCHEMA}

_CHOICES: dict[type[Event], tuple[tuple[str, tuple[object, ...]], ...]] = {}


def _choices(cls: type[Event]) -> tuple[tuple[str, tuple[object, ...]], ...]:
    """The fields of ``cls`` typed as a ``Literal``, with their allowed values (cached)."""
    found = _CHOICES.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = tuple(
            (f.name, typing.get_args(hints[f.name]))
            for f in dataclasses.fields(cls)
            if typing.get_origin(hints[f.name]) is Literal
        )
        _CHOICES[cls] = found
    return found


E = TypeVar("E", bound=Event)


@dataclasses.dataclass(frozen=True)
class Published(Generic[E]):
    """An event as the bus delivered it: when, and its place in the order of all events."""

    event: E
    time: float  # time.time(), for people and pages
    seq: int

    @property
    def kind(self) -> str:
        return self.event.kind


Kinds = tuple[type[Event], ...]


class EventBus:
    """Fan-out of events to any number of subscribers, each with its own bounded queue."""

    def __init__(self, queue_length: int = DEFAULT_QUEUE_LENGTH) -> None:
        self._queue_length = queue_length
        self._subscribers: list[Subscription] = []
        self._callbacks: list[tuple[Callable[[Published[Event]], None], Kinds | None]] = []
        self._watchers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._last: dict[type[Event], Published[Event]] = {}

    def publish(self, event: Event) -> Published[Event]:
        """Deliver an event to every subscriber; safe from any thread, never blocks.

        A kind the schema does not list is refused (a programming error, found by tests).
        """
        if type(event) not in _LISTED:
            raise TypeError(f"{type(event).__name__} is not in the event schema ({SCHEMA_DOC})")
        published = Published(event, time.time(), next(self._seq))
        with self._lock:
            self._last[type(event)] = published
            subscribers = list(self._subscribers)
            callbacks = list(self._callbacks)
        for sub in subscribers:
            sub.offer(published)
        for callback, kinds in callbacks:
            if kinds is None or isinstance(event, kinds):
                callback(published)
        return published

    def latest(self, kind: type[E]) -> Published[E] | None:
        """The newest event of ``kind``, if any was published."""
        with self._lock:
            found = self._last.get(kind)
        return typing.cast("Published[E] | None", found)

    def add_callback(
        self, callback: Callable[[Published[Event]], None], kinds: Kinds | None = None
    ) -> None:
        """Call ``callback(published)`` synchronously on publish (keep it quick, non-blocking).

        ``kinds``: only events of these kinds (all when None), so that a callback that
        ignores the meter does not count as someone who wants it (:meth:`wants`).
        """
        with self._lock:
            self._callbacks.append((callback, kinds))
        self._listeners_changed()

    def remove_callback(self, callback: Callable[[Published[Event]], None]) -> None:
        with self._lock:
            self._callbacks = [(c, k) for c, k in self._callbacks if c != callback]
        self._listeners_changed()

    def wants(self, kind: type[Event]) -> bool:
        """Whether any subscriber or callback takes events of ``kind`` now.

        A producer whose events cost work to make (the level meter) makes them only
        while someone takes them.
        """
        with self._lock:
            kinds = [s.kinds for s in self._subscribers] + [k for _, k in self._callbacks]
        return any(k is None or issubclass(kind, k) for k in kinds)

    def watch_listeners(self, watcher: Callable[[], None]) -> Callable[[], None]:
        """Call ``watcher()`` (in the changing thread) whenever the listeners change.

        Returns the function that stops watching.
        """
        with self._lock:
            self._watchers.append(watcher)

        def unwatch() -> None:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)

        return unwatch

    def _listeners_changed(self) -> None:
        with self._lock:
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher()

    def subscribe(self, kinds: Kinds | None = None) -> Subscription:
        """A subscription on the running loop to ``kinds`` (all when None); ``async for`` it."""
        sub = Subscription(self, asyncio.get_running_loop(), kinds, self._queue_length)
        with self._lock:
            self._subscribers.append(sub)
        self._listeners_changed()
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub not in self._subscribers:
                return
            self._subscribers.remove(sub)
        self._listeners_changed()


_LISTED = frozenset(SCHEMA)


class Subscription:
    """One subscriber's bounded queue of events, consumed on its event loop."""

    def __init__(
        self,
        bus: EventBus,
        loop: asyncio.AbstractEventLoop,
        kinds: Kinds | None,
        length: int,
    ) -> None:
        self._bus = bus
        self._loop = loop
        self._kinds = kinds
        self._queue: deque[Published[Event]] = deque(maxlen=length)
        self._wakeup = asyncio.Event()
        self.dropped = 0

    @property
    def kinds(self) -> Kinds | None:
        """The kinds this subscriber takes (None: all)."""
        return self._kinds

    def offer(self, published: Published[Event]) -> None:
        if self._kinds is not None and not isinstance(published.event, self._kinds):
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(published)
        try:
            self._loop.call_soon_threadsafe(self._wakeup.set)
        except RuntimeError:  # loop closed: nobody is listening any more
            self._bus._remove(self)

    async def get(self) -> Published[Event]:
        while not self._queue:
            self._wakeup.clear()
            if self._queue:
                break
            await self._wakeup.wait()
        return self._queue.popleft()

    def close(self) -> None:
        self._bus._remove(self)

    def __aiter__(self) -> AsyncIterator[Published[Event]]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Published[Event]]:
        try:
            while True:
                yield await self.get()
        finally:
            self.close()
