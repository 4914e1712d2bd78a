"""What both protocol cores speak: the connection events they take, the actions they return.

A live session (:mod:`~appliance.protocol.streaming`) and an agent
conversation (:mod:`~appliance.protocol.agent`) differ in what they carry, but
their connections live the same life, so the runners drive them the same
way. Each core is a :class:`SessionCore`: the runner reports

* ``start(now)``: the session should begin (a :class:`Connect` follows);
* ``opened(now)``: the WebSocket handshake succeeded;
* ``connect_failed(now, failure)``: no connection was made;
* ``message(now, data)``: a frame from the server;
* ``closed(now, code, reason)``: the connection ended (``code`` None: the
  network dropped it);
* ``tick(now)``: time passed; ``next_timer()`` says when it next matters;

and carries out the actions below, plus each mode's own (``SendAudio``,
``Spool`` and ``EmitTurn`` for live; ``Play``, ``CallTool`` and the
transcripts for the agent). Time is always passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from appliance.protocol.failures import Failure

#: The WebSocket close code of an orderly close.
CLOSE_NORMAL = 1000
#: What a dropped network connection reports (no close frame came).
CLOSE_ABNORMAL = 1006


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a new connection now, with a FRESH token (never one used before).

    ``resume``: the agent asks to resume its conversation on it.
    """

    attempt: int
    resume: bool = False


@dataclass(frozen=True, slots=True)
class ReconnectAfter:
    """For people: the connection is down; the next :class:`Connect` comes in ``delay`` s."""

    delay: float
    reason: str
    auth_failure: bool = False


@dataclass(frozen=True, slots=True)
class SendJson:
    """Send one JSON message on the open connection."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the current connection; the runner then reports ``closed``."""

    code: int = CLOSE_NORMAL
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a person should know: a log line at ``level`` (server text already cut)."""

    level: int
    message: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The session is over: nothing more will be sent, spooled or played."""

    reason: str
    error: str | None = None


class SessionCore(Protocol):
    """The events a runner feeds either protocol core; each returns the actions to carry out."""

    @property
    def finished(self) -> bool: ...

    def start(self, now: float) -> Sequence[object]: ...

    def opened(self, now: float) -> Sequence[object]: ...

    def connect_failed(self, now: float, failure: Failure) -> Sequence[object]: ...

    def message(self, now: float, data: str | bytes) -> Sequence[object]: ...

    def closed(self, now: float, code: int | None, reason: str = "") -> Sequence[object]: ...

    def tick(self, now: float) -> Sequence[object]: ...

    def next_timer(self) -> float | None: ...
