"""Fault injection and scripting: Python methods plus the same under ``/_emulator``.

Every method runs on the server's event loop (``EmulatorThread`` marshals
calls there). HTTP: ``POST /_emulator/<method>`` with a JSON object of keyword
arguments; ``GET /_emulator/state`` returns the counters and session digest.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from appliance.emulator.faults import FaultPlan, HttpFault, NextSessionFault
from appliance.emulator.garble import GARBLE_MODES

if TYPE_CHECKING:
    from appliance.emulator.server import EmulatorApp


class Controls:
    """What tests (and the HTTP control API) can make the emulator do."""

    EXPOSED = (
        "drop",
        "close",
        "stall",
        "delay_messages",
        "garble",
        "refuse_tokens",
        "expire_tokens",
        "fail_http",
        "network_down",
        "network_up",
        "expire_sessions",
        "set_agent_script",
        "add_tool_trigger",
        "reset_faults",
        "clear_violations",
    )

    def __init__(self, app: EmulatorApp) -> None:
        self._app = app

    def drop(self, target: str = "current", kind: str | None = None, after_s: float = 0.0) -> int:
        """Vanish without a close frame: live sessions now, or the next one
        ``after_s`` seconds after it opens. Returns how many were dropped now."""
        if target == "next":
            self._app.faults.next_sessions.append(NextSessionFault("drop", kind, after_s))
            return 0
        conns = self._app.connections(kind)
        for conn in conns:
            conn.drop()
        return len(conns)

    async def close(
        self,
        code: int,
        reason: str = "closed by emulator",
        target: str = "current",
        kind: str | None = None,
        after_s: float = 0.0,
    ) -> int:
        """Close with ``code`` (streaming codes >= 3000 get an Error frame first)."""
        if target == "next":
            self._app.faults.next_sessions.append(
                NextSessionFault("close", kind, after_s, code, reason)
            )
            return 0
        conns = self._app.connections(kind)
        for conn in conns:
            await self._app.close_connection(conn, code, reason)
        return len(conns)

    def stall(
        self,
        seconds: float,
        kind: str | None = None,
        reset: bool = True,
        target: str = "current",
        after_s: float = 0.0,
    ) -> int:
        """Go quiet with the socket open: no messages, pings and closes unanswered,
        client frames unread, for ``seconds``; then reset the connection (TCP RST),
        or with ``reset=False`` answer everything held back. ``target="next"``:
        the next session of ``kind``, ``after_s`` after its Begin / session.ready.
        Returns how many live connections stalled now."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        if target == "next":
            self._app.faults.next_sessions.append(
                NextSessionFault("stall", kind, after_s, stall_s=seconds, reset=reset)
            )
            return 0
        conns = self._app.connections(kind)
        for conn in conns:
            conn.stall(seconds, reset)
        return len(conns)

    def delay_messages(self, seconds: float, count: int | None = None) -> None:
        """Delay each of the next ``count`` (None: all) outgoing messages by ``seconds``."""
        self._app.faults.message_delay_s = seconds
        self._app.faults.message_delay_remaining = count

    def garble(self, count: int = 1, mode: str = "invalid_json", kind: str | None = None) -> None:
        """Malformed frames for the next ``count`` messages (``GARBLE_MODES``):
        ``invalid_json`` replaces a message with broken JSON; ``unknown_type``,
        ``deep_nesting``, ``huge_string`` and (next Turns only) ``nan`` /
        ``infinity`` send an extra bad frame before it."""
        if mode not in GARBLE_MODES:
            raise ValueError(f"mode must be one of {', '.join(GARBLE_MODES)}")
        self._app.faults.garble_remaining = count
        self._app.faults.garble_mode = mode
        self._app.faults.garble_kind = kind

    def refuse_tokens(self, count: int = 1) -> None:
        """Refuse the next ``count`` token redemptions (closed as unauthorized)."""
        self._app.state.tokens.refuse_next = count

    def expire_tokens(self) -> int:
        """Expire every issued, unredeemed token now."""
        return self._app.state.tokens.expire_all()

    def fail_http(
        self,
        status: int = 429,
        count: int = 1,
        retry_after: str | float | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``count`` API calls (optionally under ``path_prefix``)
        with ``status``. ``retry_after`` is the Retry-After header, sent as given
        (a string keeps odd values exact: ``"-5"``, ``"1e9"``, ``"inf"``, an HTTP
        date); a 429 without one says ``1``. WebSocket upgrades fail only when
        ``path_prefix`` is the endpoint itself (``"/v3/ws"``, ``"/v1/ws"``)."""
        if status < 400:
            raise ValueError("status must be an HTTP error (>= 400)")
        if status == 429 and retry_after is None:
            retry_after = "1"
        header = None if retry_after is None else str(retry_after)
        self._app.faults.http.append(HttpFault(status, count, header, path_prefix))

    def network_down(self, seconds: float, drop_existing: bool = True) -> int:
        """Reset every new connection for ``seconds``; drop live sessions too."""
        self._app.faults.network_down_until = time.monotonic() + seconds
        return self.drop() if drop_existing else 0

    def network_up(self) -> None:
        self._app.faults.network_down_until = 0.0

    def expire_sessions(self, kind: str | None = None) -> int:
        """Make live sessions hit their maximum duration now."""
        count = 0
        for conn, session in list(self._app.live.items()):
            if kind in (None, conn.kind) and hasattr(session, "force_expiry"):
                session.force_expiry()
                count += 1
        return count

    def set_agent_script(
        self, greeting_digits: str | None = None, reply_digits: str | None = None
    ) -> None:
        """What the agent speaks: greeting digits, and reply digits (None: echo the user)."""
        script = self._app.config.agent_script
        if greeting_digits is not None:
            script.greeting_digits = greeting_digits
        script.reply_digits = reply_digits

    def add_tool_trigger(
        self, digits: str, name: str, arguments: dict[str, Any] | None = None
    ) -> None:
        """When the user says ``digits``, the agent calls tool ``name`` with ``arguments``."""
        self._app.config.agent_script.tool_triggers[digits] = (name, arguments or {})

    def reset_faults(self) -> None:
        """Clear every pending fault (stalls already under way run their course)."""
        fresh = FaultPlan()
        for field in vars(fresh):
            setattr(self._app.faults, field, getattr(fresh, field))
        self._app.state.tokens.refuse_next = 0

    def clear_violations(self) -> int:
        """Forget the violations recorded so far and the retry history they were
        judged on (for a test that broke rules on purpose). Returns how many."""
        count = len(self._app.state.violations)
        self._app.state.violations.clear()
        self._app.retries.clear()
        return count


def control_routes(app: web.Application, controls: Controls) -> None:
    """Mount the control API under ``/_emulator`` (no auth: bind to loopback)."""

    async def state(request: web.Request) -> web.Response:
        return web.json_response(controls._app.state.summary())

    async def invoke(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in Controls.EXPOSED:
            return web.json_response({"error": f"unknown control {name}"}, status=404)
        try:
            kwargs = await request.json() if request.can_read_body else {}
        except ValueError:
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        if not isinstance(kwargs, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        try:
            result = getattr(controls, name)(**kwargs)
            if hasattr(result, "__await__"):
                result = await result
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True, "result": result})

    app.router.add_get("/_emulator/state", state)
    app.router.add_post("/_emulator/{name}", invoke)
