"""The emulator's aiohttp application and its two hosts: in-loop and in-thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from appliance import dtmf
from appliance.emulator.auth import (
    REST_AUTH_ERROR,
    AuthResult,
    bearer_key_ok,
    parse_token_request,
    raw_key_ok,
)
from appliance.emulator.config import EmulatorConfig
from appliance.emulator.connection import Connection, reset_transport
from appliance.emulator.control import Controls, control_routes
from appliance.emulator.faults import FaultPlan
from appliance.emulator.retries import RetryJudge, product_of
from appliance.emulator.rules import abandoned_session
from appliance.emulator.state import EmulatorState, SessionRecord
from appliance.emulator.streaming import handle_streaming
from appliance.emulator.violations import ABANDONED, TOKEN_REUSE

T = TypeVar("T")

#: Paths that count as API calls for HTTP fault injection (429/5xx, network down).
API_PREFIXES = ("/v1/", "/v2/", "/v3/")
CONTROL_PREFIX = "/_emulator"
EMULATOR_KEY: web.AppKey[EmulatorApp] = web.AppKey("emulator")


class EmulatorApp:
    """Shared state of one emulator instance: config, records, faults, live sessions."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state = EmulatorState()
        self.faults = FaultPlan()
        self.live: dict[Connection, Any] = {}  # connection -> session object
        self.http_url = ""
        self.ws_url = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None
        if config.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="aai-emulator-")
            self.data_dir = Path(self._tmp.name)
        else:
            self._tmp = None
            self.data_dir = Path(config.data_dir)
        (self.data_dir / "uploads").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "sessions").mkdir(parents=True, exist_ok=True)
        self.retries = RetryJudge(config, self._record_retry_violation)
        self.controls = Controls(self)
        self.agent_sessions: dict[str, Any] = {}  # session_id -> AgentSession (resumable)
        self.web_app = self._build_app()

    def _record_retry_violation(self, rule: str, product: str, detail: str, data: dict) -> None:
        self.state.record_violation(rule, product, detail, **data)

    # Live session registry ---------------------------------------------
    def register(self, conn: Connection, session: Any) -> None:
        self.live[conn] = session

    def unregister(self, conn: Connection) -> None:
        self.live.pop(conn, None)

    def active_count(self, kind: str) -> int:
        return sum(1 for c in self.live if c.kind == kind and not c.closed)

    def connections(self, kind: str | None = None) -> list[Connection]:
        return [c for c in self.live if kind in (None, c.kind) and not c.closed]

    def apply_next_session_fault(self, conn: Connection) -> None:
        fault = self.faults.take_next_session_fault(conn.kind)
        if fault is None:
            return

        async def apply() -> None:
            if fault.after_s > 0:
                await asyncio.sleep(fault.after_s)
            if fault.action == "drop":
                conn.drop()
            elif fault.action == "stall":
                conn.stall(fault.stall_s, fault.reset)
            else:
                await self.close_connection(conn, fault.code, fault.reason)

        asyncio.get_running_loop().create_task(apply())

    async def close_connection(self, conn: Connection, code: int, reason: str) -> None:
        if conn.kind == "streaming" and code >= 3000:
            await conn.send_json({"type": "Error", "error_code": code, "error": reason})
        await conn.close(code, reason)

    def finish_record(self, record: SessionRecord) -> None:
        """Stamp the close and keep the received audio as a WAV file."""
        if record.closed_at is None:
            record.closed_at = time.monotonic()
        if self.config.save_session_audio and record.audio_chunks:
            path = self.data_dir / "sessions" / f"{record.kind}-{record.id}.wav"
            dtmf.write_wav(path, record.audio(), record.rate)
            record.wav_path = path

    # HTTP ------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._fault_middleware], client_max_size=3 * 1024**3)
        app[EMULATOR_KEY] = self
        app.router.add_get("/v3/token", self._streaming_token)
        app.router.add_get("/v3/ws", handle_streaming)
        app.router.add_get("/v2/realtime/ws", self._retired_v2)
        app.router.add_get("/v1/token", self._agent_token)
        try:
            from appliance.emulator.agent import handle_agent

            app.router.add_get("/v1/ws", handle_agent)
        except ImportError:  # pragma: no cover - during incremental development
            pass
        try:
            from appliance.emulator.prerecorded import add_prerecorded_routes

            add_prerecorded_routes(app)
        except ImportError:  # pragma: no cover
            pass
        from appliance.emulator.gateway import add_gateway_routes

        add_gateway_routes(app)
        control_routes(app, self.controls)
        return app

    @web.middleware
    async def _fault_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        path = request.path
        if path.startswith(CONTROL_PREFIX):
            return await handler(request)
        product = product_of(path)
        if product is not None:
            self.retries.on_request(product, path)
        if self.faults.network_is_down():
            self.state.counters["connections_refused"] += 1
            if product is not None:
                self.retries.on_failure(product)
            reset_transport(request.transport)
            raise asyncio.CancelledError  # nothing more to say on a reset connection
        if path.startswith(API_PREFIXES):
            fault = self.faults.take_http_fault(path, websocket=path.endswith("/ws"))
            if fault is not None:
                self.state.counters[f"http_{fault.status}_injected"] += 1
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = fault.retry_after
                message = "Too many requests" if fault.status == 429 else "Service unavailable"
                response = web.json_response(
                    {"error": message}, status=fault.status, headers=headers
                )
                self.state.http_requests.append((request.method, path, fault.status))
                if product is not None:
                    self.retries.on_failure(product, fault.retry_after)
                return response
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.state.http_requests.append((request.method, path, exc.status))
            if product is not None:
                self._judge_outcome(product, exc.status)
            raise
        self.state.http_requests.append((request.method, path, response.status))
        # A WebSocket's handler reports its own outcome when the upgrade is decided.
        if product is not None and not isinstance(response, web.WebSocketResponse):
            self._judge_outcome(product, response.status)
        return response

    def _judge_outcome(self, product: str, status: int) -> None:
        if status >= 400:
            self.retries.on_failure(product)
        else:
            self.retries.on_success(product)

    def upgrade_refused(self, kind: str) -> None:
        """A WebSocket upgrade of ``kind`` was refused (auth, parameters, capacity)."""
        self.retries.on_failure(kind)

    def upgrade_accepted(self, kind: str) -> None:
        self.retries.on_success(kind)

    def refuse_auth(self, kind: str, auth: AuthResult) -> None:
        """Count a refused WebSocket authorisation; a spent token is a violation."""
        self.state.counters["auth_failures"] += 1
        if auth.reused:
            self.state.record_violation(
                TOKEN_REUSE, kind, f"a spent {kind} token was presented again"
            )
        self.upgrade_refused(kind)

    def judge_close(self, conn: Connection, established: bool, said_goodbye: bool) -> None:
        """Record an abandoned session: it began, and the client left without a goodbye."""
        by_client = conn.ended_by in ("client_close", "connection_lost")
        if not abandoned_session(established, said_goodbye, by_client):
            return
        goodbye = "Terminate" if conn.kind == "streaming" else "session.end"
        record = conn.record
        if conn.ended_by == "client_close":
            how = f"closed by the client (code {record.close_code}) without {goodbye}"
        else:
            how = f"connection lost without a close frame or {goodbye}"
        self.state.record_violation(
            ABANDONED,
            conn.kind,
            how,
            session=record.id or None,
            close_frame=conn.ended_by == "client_close",
            close_code=record.close_code,
        )

    async def _issue_token(self, request: web.Request, kind: str) -> web.Response:
        ok = (
            raw_key_ok(request, self.config.api_keys)
            if kind == "streaming"
            else bearer_key_ok(request, self.config.api_keys)
        )
        if not ok:
            return web.json_response(REST_AUTH_ERROR, status=401)
        parsed = parse_token_request(request)
        if isinstance(parsed, str):
            return web.json_response({"error": parsed}, status=400)
        expires, max_session = parsed
        max_session_s = float(max_session or self.config.default_token_session_s)
        token = self.state.tokens.issue(kind, self.config.scaled(expires), max_session_s)
        return web.json_response({"token": token.value, "expires_in_seconds": expires})

    async def _streaming_token(self, request: web.Request) -> web.Response:
        return await self._issue_token(request, "streaming")

    async def _agent_token(self, request: web.Request) -> web.Response:
        return await self._issue_token(request, "agent")

    async def _retired_v2(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"error": "This endpoint has been deprecated. Use /v3/ws (Universal Streaming)."},
            status=410,
        )

    def cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


class Emulator:
    """``async with Emulator(config) as emu:`` serve on the running loop.

    Port 0 (the default here) picks a free ephemeral port; read ``emu.http_url``,
    ``emu.ws_url`` and ``emu.api_key`` afterwards. Fault and script controls
    are on ``emu.controls``; records and counters on ``emu.state``.
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = EmulatorConfig(port=0)
        for name, value in overrides.items():
            setattr(config, name, value)
        self.config = config
        self.app = EmulatorApp(config)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def state(self) -> EmulatorState:
        return self.app.state

    @property
    def controls(self) -> Controls:
        return self.app.controls

    @property
    def api_key(self) -> str:
        return self.config.api_keys[0]

    @property
    def http_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app.web_app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        server = site._server  # the asyncio server, for the bound port
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self.app.http_url = self.http_url
        self.app.ws_url = self.ws_url

    async def stop(self) -> None:
        for conn in list(self.app.live):
            conn.drop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.app.cleanup()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class EmulatorThread:
    """The emulator on its own event loop in a background thread.

    Usable from sync code and from tests that run their own loop:
    ``with EmulatorThread(config) as emu: ...``. Control methods are the
    same as ``Controls`` and run thread-safely on the server's loop.
    """

    def __init__(self, config: EmulatorConfig | None = None, **overrides: Any) -> None:
        self.emulator = Emulator(config, **overrides)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="aai-emulator", daemon=True)
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.emulator.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self._stop.wait()
        await self.emulator.stop()

    def start(self) -> EmulatorThread:
        self._thread.start()
        self._started.wait(timeout=10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
        if not self._loop.is_closed() and not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Pass-throughs ---------------------------------------------------------
    @property
    def config(self) -> EmulatorConfig:
        return self.emulator.config

    @property
    def state(self) -> EmulatorState:
        return self.emulator.state

    @property
    def api_key(self) -> str:
        return self.emulator.api_key

    @property
    def http_url(self) -> str:
        return self.emulator.http_url

    @property
    def ws_url(self) -> str:
        return self.emulator.ws_url

    @property
    def port(self) -> int:
        return self.emulator.port

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the server's loop and return its result (coroutines awaited)."""

        async def runner() -> Any:
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        future: concurrent.futures.Future = asyncio.run_coroutine_threadsafe(runner(), self._loop)
        return future.result(timeout=30)

    def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
    ) -> bool:
        """Poll ``predicate`` (evaluated on the server loop) until true or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.call(predicate):
                return True
            time.sleep(interval)
        return False

    def __getattr__(self, name: str) -> Any:
        # Control methods (drop, close, stall, fail_http, ...) run on the server loop.
        attr = getattr(self.emulator.controls, name)
        if not callable(attr):
            return attr
        return lambda *a, **kw: self.call(attr, *a, **kw)
