"""Why a connection attempt failed, in one vocabulary for live and agent sessions.

Sans I/O: the protocol cores decide what to do with a :class:`Failure`; the
I/O layer (:mod:`appliance.connection.websocket`) makes one from whatever a
token request or a WebSocket upgrade raised.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ConnectFailure(enum.Enum):
    NETWORK = "network"  # refused, timeout, DNS, 5xx, a token request's transient error
    AUTH = "auth"  # the credential was refused (401/403)
    RATE_LIMITED = "rate_limited"  # 429, usually with Retry-After
    FATAL = "fatal"  # retrying the same request cannot help (400, 404, 410, a reused token)


@dataclass(frozen=True)
class Failure:
    """One failed attempt: its kind, a short detail (no secrets), the server's Retry-After."""

    kind: ConnectFailure
    detail: str
    retry_after: float | None = None  # unclamped; the retry rule clamps it
