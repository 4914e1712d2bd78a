"""One server-side WebSocket: logged sends, injected faults, and clean or dirty closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import WebSocketError, WSMessage, WSMsgType, web

from appliance.emulator.config import EmulatorConfig
from appliance.emulator.faults import FaultPlan
from appliance.emulator.garble import garbled_frames
from appliance.emulator.state import LoggedMessage, SessionRecord

MAX_CLOSE_REASON_BYTES = 123
#: Largest client frame accepted (agent audio arrives base64 in JSON).
MAX_CLIENT_FRAME = 8 * 1024 * 1024


def cut_reason(reason: str) -> str:
    """Close reasons are limited to 123 bytes of UTF-8; cut on a character boundary."""
    data = reason.encode()[:MAX_CLOSE_REASON_BYTES]
    return data.decode("utf-8", errors="ignore")


def reset_transport(transport: asyncio.BaseTransport | None) -> None:
    """Tear a TCP connection down with a reset: no close frame, no FIN handshake."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


class Connection:
    """Wraps an aiohttp WebSocketResponse for one emulated session.

    The response is made with ``autoping=False`` and ``autoclose=False``
    (see ``websocket_response``): pings and close frames are answered here,
    so a stalled connection answers neither.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        record: SessionRecord,
        faults: FaultPlan,
        config: EmulatorConfig,
    ) -> None:
        self.ws = ws
        self.transport = request.transport
        self.record = record
        self.faults = faults
        self.config = config
        self.kind = record.kind
        self._send_lock = asyncio.Lock()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stall_task: asyncio.Task | None = None
        self.closed = False
        #: Who ended the connection: "server", "client_close" (a close frame)
        #: or "connection_lost" (no close frame); None while it is open.
        self.ended_by: str | None = None
        self.last_activity = time.monotonic()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def log_in(self, kind: str, payload: Any) -> None:
        self.last_activity = time.monotonic()
        self.record.messages.append(LoggedMessage("in", time.monotonic(), kind, payload))

    def _log_out(self, kind: str, payload: Any) -> None:
        self.record.messages.append(LoggedMessage("out", time.monotonic(), kind, payload))

    async def incoming(self) -> AsyncIterator[WSMessage]:
        """Data frames from the client; pings and closes answered unless stalled."""
        while not self.closed:
            msg = await self.ws.receive()
            await self._flowing.wait()  # a stall holds this frame (and the pong) back
            if self.closed:
                return
            if msg.type is WSMsgType.PING:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.pong(msg.data)
                continue
            if msg.type is WSMsgType.PONG:
                continue
            if msg.type is WSMsgType.CLOSE:
                await self._client_closed(msg.data)
                return
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                yield msg
                continue
            if msg.type is WSMsgType.ERROR and isinstance(msg.data, WebSocketError):
                # aiohttp refused a frame (too big, bad opcode) and closed with its code.
                self._ended("server", msg.data.code, cut_reason(f"protocol error: {msg.data}"))
                return
            self._ended("connection_lost", 1006, "connection lost without a close frame")
            return

    async def _client_closed(self, code: int | None) -> None:
        self._ended("client_close", code, "closed by the client")
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close()

    def _ended(self, by: str, code: int | None, reason: str) -> None:
        if self.ended_by is None:
            self.ended_by = by
            self.record.close_code = code
            self.record.close_reason = reason
        self.closed = True
        self._flowing.set()  # wake anything waiting on a stall
        if self._stall_task is not None:
            self._stall_task.cancel()

    async def send_json(
        self, message: dict[str, Any], on_write: Callable[[], None] | None = None
    ) -> None:
        """Send one JSON message, subject to injected stalls, delays and garbling.

        ``on_write`` runs just before the message is written (after any injected
        delay): the moment the server can be said to have sent it.
        """
        async with self._send_lock:
            await self._flowing.wait()
            delay = self.faults.take_delay()
            if delay:
                await asyncio.sleep(delay)
                await self._flowing.wait()
            if self.closed:
                return
            try:
                garble = self.faults.take_garble(self.kind, message)
                if garble is not None:
                    frames, keep = garbled_frames(
                        garble,
                        message,
                        self.config.garble_nesting_depth,
                        self.config.garble_string_chars,
                    )
                    for frame in frames:
                        self._log_out("text", frame)
                        await self.ws.send_str(frame)
                    if not keep:
                        return
                self._log_out("json", message)
                if on_write is not None:
                    on_write()
                await self.ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):
                self._ended("connection_lost", 1006, "connection lost while sending")

    def stall(self, seconds: float, reset: bool = True) -> None:
        """Answer nothing for ``seconds``: no messages, no pongs, no close frame.

        Frames the client sends wait unread (TCP backpressure follows). Then
        the connection is reset, or with ``reset=False`` everything held back
        flows again in order.
        """
        if self.closed:
            return
        self._flowing.clear()
        if self._stall_task is not None:
            self._stall_task.cancel()
        self._stall_task = asyncio.get_running_loop().create_task(self._end_stall(seconds, reset))

    async def _end_stall(self, seconds: float, reset: bool) -> None:
        await asyncio.sleep(seconds)
        self._stall_task = None
        if reset:
            self.drop("reset after a stall")
        else:
            self._flowing.set()

    async def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close frame (idempotent)."""
        if self.closed:
            return
        reason = cut_reason(reason)
        self._ended("server", code, reason)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode())

    def drop(self, reason: str = "dropped by fault injection") -> None:
        """Vanish without a close frame (a dead network path)."""
        if self.closed:
            return
        self._ended("server", 1006, reason)
        reset_transport(self.transport)


def websocket_response() -> web.WebSocketResponse:
    """The server side of every emulated WebSocket: pings and closes answered by hand."""
    return web.WebSocketResponse(autoping=False, autoclose=False, max_msg_size=MAX_CLIENT_FRAME)
