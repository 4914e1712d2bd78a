"""One server-side WebSocket: logged sends, injected faults, and clean or dirty closes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time
from typing import Any

from aiohttp import web

from appliance.emulator.faults import FaultPlan
from appliance.emulator.state import LoggedMessage, SessionRecord

MAX_CLOSE_REASON_BYTES = 123


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
    """Wraps an aiohttp WebSocketResponse for one emulated session."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        record: SessionRecord,
        faults: FaultPlan,
    ) -> None:
        self.ws = ws
        self.transport = request.transport
        self.record = record
        self.faults = faults
        self.kind = record.kind
        self._send_lock = asyncio.Lock()
        self.closed = False
        self.last_activity = time.monotonic()

    def log_in(self, kind: str, payload: Any) -> None:
        self.last_activity = time.monotonic()
        self.record.messages.append(LoggedMessage("in", time.monotonic(), kind, payload))

    async def send_json(self, message: dict[str, Any]) -> None:
        """Send one JSON message, subject to injected stalls, delays and garbling."""
        async with self._send_lock:
            if self.closed:
                return
            stall = self.faults.stalled_for(self.kind)
            delay = self.faults.take_delay()
            if stall or delay:
                await asyncio.sleep(stall + delay)
                if self.closed:
                    return
            garble = self.faults.take_garble(self.kind)
            try:
                if garble == "unknown_type":
                    extra = {"type": "EmulatorUnknownEvent", "note": "clients must ignore this"}
                    self.record.messages.append(
                        LoggedMessage("out", time.monotonic(), "json", extra)
                    )
                    await self.ws.send_str(json.dumps(extra))
                if garble == "invalid_json":
                    text = json.dumps(message)[: -max(2, len(json.dumps(message)) // 3)]
                    self.record.messages.append(
                        LoggedMessage("out", time.monotonic(), "text", text)
                    )
                    await self.ws.send_str(text)
                    return
                self.record.messages.append(LoggedMessage("out", time.monotonic(), "json", message))
                await self.ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):
                self.closed = True

    async def close(self, code: int, reason: str) -> None:
        """Close with a WebSocket close frame (idempotent)."""
        if self.closed:
            return
        self.closed = True
        reason = cut_reason(reason)
        self.record.close_code = code
        self.record.close_reason = reason
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason.encode())

    def drop(self) -> None:
        """Vanish without a close frame (a dead network path)."""
        if self.closed:
            return
        self.closed = True
        self.record.close_code = 1006
        self.record.close_reason = "dropped by fault injection"
        reset_transport(self.transport)
