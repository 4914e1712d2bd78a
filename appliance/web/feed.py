"""What the page's live feed carries, and when: pure logic, tested without sockets.

Each page connection has one ``FeedPacer``. Most events pass straight
through; microphone level readings (tens per second) are coalesced to the
newest one per ``level_interval`` so that a page costs little, and events that
change the status view (state, session, spool, upload, error) are turned into
one fresh status snapshot per ``status_interval`` instead of making the page
reassemble the daemon's state from deltas.

``History`` keeps the recent caption lines and errors so that a page opened
(or reconnected) mid-session starts with what is on screen elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict, deque
from typing import Any

from appliance.events import (
    SCHEMA,
    SCHEMA_VERSION,
    ErrorReported,
    Event,
    Kinds,
    MicLevel,
    Published,
    SessionPhase,
    SpoolStatus,
    StateChanged,
    SummaryStored,
    TurnFinal,
    TurnPartial,
    UploadProgress,
)

DEFAULT_LEVEL_INTERVAL_S = 0.2  # at most 5 level readings a second per page
DEFAULT_STATUS_INTERVAL_S = 0.5  # at most 2 status snapshots a second per page
DEFAULT_HISTORY_TURNS = 50
DEFAULT_HISTORY_ERRORS = 10

#: What a page may ask for in ``?kinds=``: prefixes of event kinds (``turn.`` is both turns).
FEED_KINDS = (
    "state", "session", "turn.", "agent.", "spool", "upload.", "recording.", "error", "level",
    "summary",
    "volume", "mute",
)  # fmt: skip
#: Events after which the status view is out of date.
STATUS_KINDS: Kinds = (
    StateChanged,
    SessionPhase,
    SpoolStatus,
    UploadProgress,
    ErrorReported,
    SummaryStored,
)
#: Per-word timings and confidences are for machines; the page shows the text.
_DROPPED_FIELDS = frozenset({"words"})


class _StatusDue:
    """Marker: send a fresh status snapshot now."""

    def __repr__(self) -> str:
        return "STATUS_DUE"


STATUS_DUE = _StatusDue()
Outgoing = Published[Event] | _StatusDue


def encode(kind: str, data: object, time: float | None = None, seq: int | None = None) -> str:
    """One feed message: ``{"kind", "v", "data", "time", "seq"}`` as JSON."""
    message: dict[str, Any] = {"kind": kind, "v": SCHEMA_VERSION, "data": data}
    if time is not None:
        message["time"] = time
    if seq is not None:
        message["seq"] = seq
    return json.dumps(message, default=str, separators=(",", ":"), ensure_ascii=False)


def event_message(published: Published[Event]) -> dict[str, Any]:
    """The page's view of an event (dict form, for embedding in a snapshot)."""
    data = {k: v for k, v in published.event.data().items() if k not in _DROPPED_FIELDS}
    return {
        "kind": published.kind,
        "v": SCHEMA_VERSION,
        "data": data,
        "time": published.time,
        "seq": published.seq,
    }


def encode_event(published: Published[Event]) -> str:
    message = event_message(published)
    return encode(message["kind"], message["data"], message["time"], message["seq"])


def parse_kinds(query_value: str | None) -> Kinds:
    """The event kinds a page asked for (``?kinds=turn.,state``); unknown prefixes are
    ignored, nothing asked means everything the feed carries."""
    asked = tuple(p.strip() for p in (query_value or "").split(","))
    prefixes = tuple(p for p in asked if p in FEED_KINDS) or FEED_KINDS
    return tuple(cls for cls in SCHEMA if cls.kind.startswith(prefixes))


@dataclasses.dataclass
class _Coalescer:
    interval: float
    last: float = float("-inf")
    pending: bool = False

    def offer(self, now: float) -> bool:
        """True if something may go out now; otherwise remember that it is owed."""
        if now - self.last >= self.interval:
            self.last = now
            self.pending = False
            return True
        self.pending = True
        return False

    def deadline(self) -> float | None:
        return self.last + self.interval if self.pending else None

    def due(self, now: float) -> bool:
        if self.pending and now >= self.last + self.interval:
            self.last = now
            self.pending = False
            return True
        return False


class FeedPacer:
    """Per-page pacing: which events go out now, which wait, which become a status refresh.

    Feed it with ``on_event`` and, when ``deadline()`` (a time on the same clock as
    ``now``) passes, with ``on_timer``; send what they return, in order.
    """

    def __init__(
        self,
        *,
        level_interval: float = DEFAULT_LEVEL_INTERVAL_S,
        status_interval: float = DEFAULT_STATUS_INTERVAL_S,
        wants_status: bool = True,
    ) -> None:
        self._level = _Coalescer(level_interval)
        self._status = _Coalescer(status_interval)
        self._wants_status = wants_status
        self._newest_level: Published[Event] | None = None

    def on_event(self, event: Published[Event], now: float) -> list[Outgoing]:
        if isinstance(event.event, MicLevel):
            if self._level.offer(now):
                self._newest_level = None
                return [event, *self.on_timer(now)]
            self._newest_level = event
            return self.on_timer(now)
        out: list[Outgoing] = [event]
        if self._wants_status and isinstance(event.event, STATUS_KINDS) and self._status.offer(now):
            out.append(STATUS_DUE)
        out.extend(self.on_timer(now))
        return out

    def on_timer(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        if self._level.due(now) and self._newest_level is not None:
            out.append(self._newest_level)
            self._newest_level = None
        if self._status.due(now):
            out.append(STATUS_DUE)
        return out

    def deadline(self) -> float | None:
        times = [t for t in (self._level.deadline(), self._status.deadline()) if t is not None]
        return min(times) if times else None


class History:
    """Recent caption lines (a final replaces its partials) and recent errors.

    Agent conversations are not kept: they are shown live only."""

    def __init__(
        self, max_turns: int = DEFAULT_HISTORY_TURNS, max_errors: int = DEFAULT_HISTORY_ERRORS
    ) -> None:
        self._turns: OrderedDict[tuple[str, int | None], Published[Event]] = OrderedDict()
        self._max_turns = max_turns
        self.errors: deque[Published[Event]] = deque(maxlen=max_errors)

    def add(self, published: Published[Event]) -> None:
        event = published.event
        if isinstance(event, TurnPartial | TurnFinal):
            key = (event.session_id, event.turn_order)
            old = self._turns.get(key)
            if (
                old is not None
                and isinstance(old.event, TurnFinal)
                and isinstance(event, TurnPartial)
            ):
                return  # a late partial never undoes a final
            self._turns[key] = published
            self._turns.move_to_end(key)
            while len(self._turns) > self._max_turns:
                self._turns.popitem(last=False)
        elif isinstance(event, ErrorReported):
            self.errors.append(published)

    def captions(self) -> list[Published[Event]]:
        return list(self._turns.values())
