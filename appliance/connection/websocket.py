"""Opening a session's WebSocket, the same way for live and agent, and naming its failures.

Every bound is a field of :class:`WebSocketLimits`. Liveness comes from the
WebSocket's own keepalive: a server that answers neither messages nor pings
for ``ping_interval + ping_timeout`` is declared dead and the connection
closed, so its unconfirmed audio is resent or spooled.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Literal

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from appliance.cloud import tls
from appliance.cloud.tokens import TokenAuthError, TokenError, TokenTransientError
from appliance.protocol.failures import ConnectFailure, Failure
from appliance.protocol.retry import parse_retry_after
from appliance.secrets import redact


@dataclass(frozen=True)
class WebSocketLimits:
    """Bounds on one session WebSocket (a press must never hang on a dead network)."""

    open_timeout_seconds: float = 10.0
    ping_interval_seconds: float = 2.5
    ping_timeout_seconds: float = 2.5
    close_timeout_seconds: float = 2.0
    max_message_bytes: int = 2**20


DEFAULT_WEBSOCKET_LIMITS = WebSocketLimits()


async def open_session_socket(
    url: str,
    *,
    tls_for: str,
    limits: WebSocketLimits = DEFAULT_WEBSOCKET_LIMITS,
    proxy: str | Literal[True] | None = True,
) -> ClientConnection:
    """Open ``url`` (its token in the query); raises what :func:`failure_from` names."""
    context: ssl.SSLContext | None = tls.context_for(tls_for)  # one shared context
    return await ws_connect(
        url,
        ssl=context,
        open_timeout=limits.open_timeout_seconds,
        ping_interval=limits.ping_interval_seconds,
        ping_timeout=limits.ping_timeout_seconds,
        close_timeout=limits.close_timeout_seconds,
        max_size=limits.max_message_bytes,
        # PCM and base64 barely compress; permessage-deflate only costs CPU.
        compression=None,
        proxy=proxy,
    )


#: Exceptions an attempt to connect can raise that are the network's or the server's.
CONNECT_ERRORS = (OSError, TimeoutError, websockets.InvalidHandshake, TokenError)


def failure_from(exc: BaseException) -> Failure:
    """The failure a token request's or an upgrade's exception stands for."""
    if isinstance(exc, TokenAuthError):
        return Failure(ConnectFailure.AUTH, str(exc))
    if isinstance(exc, TokenTransientError):
        kind = ConnectFailure.RATE_LIMITED if exc.status == 429 else ConnectFailure.NETWORK
        return Failure(kind, str(exc), exc.retry_after)
    if isinstance(exc, TokenError):
        return Failure(ConnectFailure.FATAL, str(exc))
    if isinstance(exc, websockets.InvalidStatus):
        status = exc.response.status_code
        retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
        detail = f"HTTP {status} on upgrade"
        if status == 429:
            return Failure(ConnectFailure.RATE_LIMITED, detail, retry_after)
        if status in (401, 403):
            return Failure(ConnectFailure.AUTH, detail)
        if status in (400, 404, 410):
            return Failure(ConnectFailure.FATAL, detail)
        return Failure(ConnectFailure.NETWORK, detail, retry_after if status >= 500 else None)
    return Failure(ConnectFailure.NETWORK, redact(type(exc).__name__))
