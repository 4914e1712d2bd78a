"""The local captions and status page: plain HTTP GETs and a WebSocket feed on one port.

Served by the ``websockets`` asyncio server the daemon already imports for the
cloud connections: its HTTP/1.1 parser answers page requests through
``process_request`` and upgrades ``/feed`` to a WebSocket, so the page costs no
extra dependency and no hand-written HTTP parsing (``scripts/bench_web_import.py``
has the import-time and memory figures against aiohttp).

Routes
  GET  /                  captions page (large text, partials replaced by finals)
  GET  /status            status page (mode, state, level, connection, spool, errors)
  GET  /api/status        the status snapshot as JSON
  GET  /feed?kinds=a,b    WebSocket: a ``hello`` message, then events as JSON
  POST /api/control/<action>?arg=value   with ``Authorization: Bearer <token>``
                          (after a wrong token the client waits longer each time:
                          429 with Retry-After; see ``throttle``)

The status snapshot is what the newest events say (state, mode, session,
level: ``snapshot.from_events``), overlaid with whatever the daemon's
``status()`` returns, plus ``controls`` (bool) and, if the daemon gives none,
``errors`` from the feed. ``snapshot.spool_section(spool)`` makes the spool part.
The page understands these keys, all optional: ``mode``, ``state``,
``connection``, ``session`` (``{"id", "mode", ...}`` or null), ``level_dbfs``,
``spool`` (``{"waiting", "bytes", "recordings": [{"id", "state", ...}]}``),
``errors`` (``[{"message", "where", "time"}]``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import http
import json
import logging
import math
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from appliance.config import WebConfig
from appliance.events import (
    ErrorReported,
    EventBus,
    Published,
    Subscription,
    TurnFinal,
    TurnPartial,
)
from appliance.web.feed import (
    DEFAULT_HISTORY_ERRORS,
    DEFAULT_HISTORY_TURNS,
    DEFAULT_LEVEL_INTERVAL_S,
    DEFAULT_STATUS_INTERVAL_S,
    FeedPacer,
    History,
    encode,
    encode_event,
    event_message,
    parse_kinds,
)
from appliance.web.guard import ControlGuard, Verdict, host_allowed, origin_allowed
from appliance.web.history import PREFIX as HISTORY_PREFIX
from appliance.web.history import HistoryApi
from appliance.web.snapshot import from_events
from appliance.web.throttle import RefusalLog, Summary, TokenThrottle

log = logging.getLogger(__name__)
# websockets logs every plain HTTP answer as "connection rejected" at INFO; keep that quiet.
_protocol_log = logging.getLogger("appliance.web.protocol")
_protocol_log.setLevel(logging.WARNING)

StatusFn = Callable[[], dict[str, Any]]
ControlFn = Callable[[str, dict[str, str]], Awaitable[dict[str, Any]]]

#: What the page's buttons may ask the daemon to do (the control callback gets these names).
CONTROL_ACTIONS = (
    "start_session",
    "stop_session",
    "switch_mode",
    "retry_spool",
    "end_turn",
    "retune",
    "volume_up",
    "volume_down",
    "set_volume",
    "mute",
    "unmute",
    "toggle_mute",
)

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
#: The history page plays a recording it fetched with the token, from a blob: URL.
_HISTORY_CSP = _CSP.replace("img-src data:;", "img-src data:; media-src blob:;")
_PAGES = {"/": "captions.html", "/status": "status.html", "/history": "history.html"}


@dataclasses.dataclass(frozen=True)
class WebLimits:
    """Bounds that keep the page cheap on a Pi Zero; the defaults suit a kiosk or two."""

    max_feed_clients: int = 8
    level_interval_s: float = DEFAULT_LEVEL_INTERVAL_S
    status_interval_s: float = DEFAULT_STATUS_INTERVAL_S
    feed_queue_length: int = 256  # events a slow page may fall behind before losing the oldest
    history_turns: int = DEFAULT_HISTORY_TURNS
    history_errors: int = DEFAULT_HISTORY_ERRORS
    control_timeout_s: float = 10.0
    max_incoming_message: int = 4096  # the page never sends anything but pongs
    request_timeout_s: float = 5.0  # a socket that sends no request by then is dropped
    token_miss_delay_s: float = 1.0  # wait after a wrong control token, doubling per miss
    token_miss_max_delay_s: float = 60.0
    token_miss_forget_s: float = 900.0  # misses older than this are forgiven
    tracked_clients: int = 256  # clients the token throttle and the refusal log remember
    refusal_quiet_s: float = 10.0  # a burst of refused controls ends after this long without one
    refusal_report_s: float = 60.0  # a longer burst is counted in the log this often


class WebServer:
    """The daemon's local web page. ``start()`` binds, ``stop()`` closes every connection."""

    def __init__(
        self,
        config: WebConfig,
        events: EventBus,
        status: StatusFn,
        control: ControlFn | None = None,
        *,
        limits: WebLimits | None = None,
        history: HistoryApi | None = None,
    ) -> None:
        self.config = config
        self.events = events
        self._status = status
        self._control = control
        self.limits = limits or WebLimits()
        self.port: int | None = None
        self._server: Server | None = None
        self._history = History(self.limits.history_turns, self.limits.history_errors)
        self._history_task: asyncio.Task[None] | None = None
        self._guard = ControlGuard(False, None)
        self._past = history
        self._history_guard = ControlGuard(False, None)
        self._pages: dict[str, bytes] = {}
        self._feed_clients = 0
        self._sockets: set[ServerConnection] = set()
        limits = self.limits
        self._throttle = TokenThrottle(
            base_delay=limits.token_miss_delay_s,
            max_delay=limits.token_miss_max_delay_s,
            forget_after=limits.token_miss_forget_s,
            max_clients=limits.tracked_clients,
        )
        self._refusals = RefusalLog(
            quiet_after=limits.refusal_quiet_s,
            report_every=limits.refusal_report_s,
            max_clients=limits.tracked_clients,
        )
        self._refusal_timer: asyncio.TimerHandle | None = None

    @property
    def controls_available(self) -> bool:
        return self._control is not None and self._guard.check(None) is not Verdict.DISABLED

    async def start(self) -> None:
        self._guard = ControlGuard.from_file(
            self.config.controls_enabled and self._control is not None,
            self.config.control_token_file,
        )
        if self._past is not None and self.config.history_enabled:
            # Meeting transcripts are private: the same token as the controls, controls on or off.
            self._history_guard = (
                ControlGuard.from_file(True, self.config.control_token_file)
                if self.config.control_token_file is not None
                else ControlGuard(True, None)
            )
        else:
            self._history_guard = ControlGuard(False, None)
        static = resources.files("appliance.web") / "static"
        self._pages = {path: (static / name).read_bytes() for path, name in _PAGES.items()}
        history_sub = self.events.subscribe((TurnPartial, TurnFinal, ErrorReported))
        self._history_task = asyncio.create_task(self._keep_history(history_sub))
        self._server = await serve(
            self._feed,
            self.config.host,
            self.config.port,
            process_request=self._route,
            server_header=None,
            max_size=self.limits.max_incoming_message,
            max_queue=4,
            open_timeout=self.limits.request_timeout_s,
            logger=_protocol_log,
            create_connection=_tracked_connection_class(self._sockets),
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "web page on http://%s:%d/ (controls %s)",
            self.config.host,
            self.port,
            "on" if self._guard.enabled else "off",
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            # Browsers keep idle spare sockets open; those that never sent a request
            # (or got their page and lingered) would hold shutdown for open_timeout.
            for connection in list(self._sockets):
                if connection.protocol.state is not State.OPEN:
                    connection.transport.abort()
            await self._server.wait_closed()
            self._server = None
        if self._history_task is not None:
            self._history_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._history_task
            self._history_task = None
        if self._refusal_timer is not None:
            self._refusal_timer.cancel()
            self._refusal_timer = None
        for summary in self._refusals.flush():
            _log_summary(summary)

    # -- status -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The status view's data: the daemon's status plus what the page itself knows."""
        status = from_events(self.events)
        try:
            status.update(self._status())
        except Exception:
            log.exception("the status callback failed")
            status["state"] = "unknown"
        status["controls"] = self.controls_available
        if "errors" not in status:
            status["errors"] = [
                {"message": e.message, "where": e.where, "time": p.time}
                for p in self._history.errors
                if isinstance(e := p.event, ErrorReported)
            ]
        return status

    async def _keep_history(self, sub: Subscription) -> None:
        async for published in sub:
            self._history.add(published)

    # -- HTTP ---------------------------------------------------------------

    async def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        headers = request.headers
        if not host_allowed(headers.get("Host"), self.config.host):
            return _text(http.HTTPStatus.MISDIRECTED_REQUEST, "unknown host name\n")
        url = urlsplit(request.path)
        path = url.path
        if path.startswith("/api/control/"):
            return await self._control_request(connection, request, path, url.query)
        if request.method != "GET":
            return _text(http.HTTPStatus.METHOD_NOT_ALLOWED, "only GET here\n", allow="GET")
        if path == HISTORY_PREFIX or path.startswith(HISTORY_PREFIX + "/"):
            return await self._history_request(connection, request, path)
        if path in self._pages:
            csp = _HISTORY_CSP if path == "/history" else _CSP
            return _response(
                http.HTTPStatus.OK, self._pages[path], "text/html; charset=utf-8", csp=csp
            )
        if path == "/api/status":
            body = json.dumps(self.snapshot(), default=str).encode()
            return _response(http.HTTPStatus.OK, body, "application/json")
        if path == "/feed":
            if not origin_allowed(headers.get("Origin"), headers.get("Host")):
                return _text(http.HTTPStatus.FORBIDDEN, "cross-origin feed refused\n")
            if self._feed_clients >= self.limits.max_feed_clients:
                return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, "too many pages open\n")
            return None  # go on with the WebSocket handshake
        return _text(http.HTTPStatus.NOT_FOUND, "not found\n")

    async def _control_request(
        self, connection: ServerConnection, request: Request, path: str, query: str
    ) -> Response:
        action = path.removeprefix("/api/control/")
        if request.method != "POST":
            return _text(http.HTTPStatus.METHOD_NOT_ALLOWED, "use POST\n", allow="POST")
        refusal = self._token_refusal(connection, request, self._guard, action)
        if refusal is not None:
            return refusal
        if action not in CONTROL_ACTIONS:
            return _json(http.HTTPStatus.NOT_FOUND, {"error": "unknown control"})
        assert self._control is not None  # controls are only enabled with a callback
        args = dict(parse_qsl(query)[:8])
        log.info("web control %s %s from %s", action, args, _peer(connection))
        try:
            result = await asyncio.wait_for(
                self._control(action, args), self.limits.control_timeout_s
            )
        except ValueError as exc:
            return _json(http.HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except TimeoutError:
            log.error("web control %s did not answer in time", action)
            return _json(http.HTTPStatus.GATEWAY_TIMEOUT, {"error": "the daemon did not answer"})
        except Exception:
            log.exception("web control %s failed", action)
            return _json(http.HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "control failed"})
        return _json(http.HTTPStatus.OK, result if isinstance(result, dict) else {})

    def _token_refusal(
        self, connection: ServerConnection, request: Request, guard: ControlGuard, action: str
    ) -> Response | None:
        """The answer refusing a request without the right bearer token, or None to go on.
        A client that sent wrong tokens waits longer each time (429 with Retry-After)."""
        client = _peer_host(connection)
        now = asyncio.get_running_loop().time()
        wait = self._throttle.wait(client, now)
        if wait > 0:
            self._refused(connection, action, "too many wrong tokens", now)
            return _json(
                http.HTTPStatus.TOO_MANY_REQUESTS,
                {"error": "too many wrong tokens; wait before trying again"},
                retry_after=str(math.ceil(wait)),
            )
        verdict = guard.check(request.headers.get("Authorization"))
        if verdict is Verdict.WRONG:
            self._throttle.missed(client, now)
        if verdict is not Verdict.ALLOWED:
            self._refused(connection, action, verdict.value, now)
            if verdict in (Verdict.MISSING, Verdict.WRONG):
                return _json(
                    http.HTTPStatus.UNAUTHORIZED,
                    {"error": "a valid bearer token is required"},
                    www_authenticate='Bearer realm="appliance"',
                )
            return _json(http.HTTPStatus.FORBIDDEN, {"error": verdict.value})
        self._throttle.passed(client)
        return None

    async def _history_request(
        self, connection: ServerConnection, request: Request, path: str
    ) -> Response:
        """Past transcripts: the control token, throttled like a control, then the archive."""
        refusal = self._token_refusal(connection, request, self._history_guard, "history")
        if refusal is not None:
            return refusal
        assert self._past is not None  # the guard is only enabled with an archive
        session = self.snapshot().get("session")
        live = session.get("id") if isinstance(session, dict) else None
        reply = await self._past.answer(path, live if isinstance(live, str) else None)
        return _response(reply.status, reply.body, reply.content_type, **reply.headers)

    def _refused(self, connection: ServerConnection, action: str, reason: str, now: float) -> None:
        """Log the first refusal of a burst (the reason and the peer, never the header's
        value); the rest are counted and logged as one line when the burst ends."""
        if self._refusals.refused(_peer_host(connection), reason, now):
            log.warning(
                "refused web control %r from %s: %s", action[:40], _peer(connection), reason
            )
        if self._refusal_timer is None:
            loop = asyncio.get_running_loop()
            self._refusal_timer = loop.call_later(
                self.limits.refusal_quiet_s, self._report_refusals
            )

    def _report_refusals(self) -> None:
        self._refusal_timer = None
        loop = asyncio.get_running_loop()
        for summary in self._refusals.due(loop.time()):
            _log_summary(summary)
        if self._refusals:
            self._refusal_timer = loop.call_later(
                self.limits.refusal_quiet_s, self._report_refusals
            )

    # -- the feed -----------------------------------------------------------

    async def _feed(self, ws: ServerConnection) -> None:
        query = dict(parse_qsl(urlsplit(ws.request.path).query)) if ws.request else {}
        kinds = parse_kinds(query.get("kinds"))
        wants_status = query.get("status") == "1"
        self._feed_clients += 1
        sub = self.events.subscribe(kinds)
        wants_captions = TurnFinal in kinds
        sender = asyncio.create_task(self._send_feed(ws, sub, wants_captions, wants_status))
        closed = asyncio.create_task(ws.wait_closed())
        try:
            await asyncio.wait((sender, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sender.cancel()
            closed.cancel()
            sub.close()
            self._feed_clients -= 1
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await sender

    async def _send_feed(
        self, ws: ServerConnection, sub: Subscription, wants_captions: bool, wants_status: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        hello: dict[str, Any] = {
            "recent": [event_message(e) for e in self._history.captions()]
            if wants_captions
            else [],
            "controls": self.controls_available,
        }
        if wants_status:
            hello["status"] = self.snapshot()
        await ws.send(encode("hello", hello))
        pacer = FeedPacer(
            level_interval=self.limits.level_interval_s,
            status_interval=self.limits.status_interval_s,
            wants_status=wants_status,
        )
        while True:
            deadline = pacer.deadline()
            if deadline is None:
                out = pacer.on_event(await sub.get(), loop.time())
            else:
                try:
                    event = await asyncio.wait_for(sub.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    out = pacer.on_timer(loop.time())
                else:
                    out = pacer.on_event(event, loop.time())
            for item in out:
                if isinstance(item, Published):
                    await ws.send(encode_event(item))
                else:  # STATUS_DUE
                    await ws.send(encode("status", self.snapshot()))


def _tracked_connection_class(live: set[ServerConnection]) -> type[ServerConnection]:
    """A connection class that keeps ``live`` up to date, idle sockets included
    (websockets itself only lists connections that completed a WebSocket handshake)."""

    class TrackedConnection(ServerConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            live.add(self)

        def connection_lost(self, exc: Exception | None) -> None:
            live.discard(self)
            super().connection_lost(exc)

    return TrackedConnection


def _peer(connection: ServerConnection) -> str:
    try:
        host, port = connection.remote_address[:2]
    except (TypeError, ValueError):
        return "unknown"
    return f"{host}:{port}"


def _peer_host(connection: ServerConnection) -> str:
    """The client as the throttle knows it: its address, whatever port it comes from."""
    try:
        return str(connection.remote_address[0])
    except (TypeError, IndexError):
        return "unknown"


def _log_summary(summary: Summary) -> None:
    log.warning(
        "refused %d more web control request(s) from %s in %.0f s: %s%s",
        summary.count,
        summary.client,
        summary.seconds,
        summary.reason,
        "" if summary.ended else " (still going on)",
    )


def _response(
    status: http.HTTPStatus, body: bytes, content_type: str, *, csp: str = _CSP, **extra: str
) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", csp),
        ]
    )
    for name, value in extra.items():
        headers[name.replace("_", "-").title()] = value
    return Response(status.value, status.phrase, headers, body)


def _text(status: http.HTTPStatus, text: str, **extra: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8", **extra)


def _json(status: http.HTTPStatus, data: dict[str, Any], **extra: str) -> Response:
    return _response(status, json.dumps(data, default=str).encode(), "application/json", **extra)
