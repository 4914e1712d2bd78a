"""Fault plan: what the emulator should break next, set through the control API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from appliance.emulator.garble import applies_to


@dataclass
class NextSessionFault:
    """Applied to the next session that opens (``kind`` None: either API)."""

    action: str  # "drop", "close" or "stall"
    kind: str | None
    after_s: float
    code: int = 1000
    reason: str = ""
    stall_s: float = 0.0
    reset: bool = True


@dataclass
class HttpFault:
    """The next API calls answer ``status``; ``retry_after`` is the header's exact text.

    WebSocket upgrades (``/v3/ws``, ``/v1/ws``) are refused only by a fault
    whose ``path_prefix`` names that endpoint exactly, so a plain
    ``fail_http`` never breaks a reconnect by accident.
    """

    status: int
    remaining: int
    retry_after: str | None
    path_prefix: str | None

    def matches(self, path: str, websocket: bool) -> bool:
        if websocket:
            return self.path_prefix == path
        return self.path_prefix is None or path.startswith(self.path_prefix)


@dataclass
class FaultPlan:
    """Pending faults; per-connection stalls live on the Connection itself."""

    next_sessions: list[NextSessionFault] = field(default_factory=list)
    http: list[HttpFault] = field(default_factory=list)
    message_delay_s: float = 0.0
    message_delay_remaining: int | None = None
    garble_remaining: int = 0
    garble_mode: str = "invalid_json"
    garble_kind: str | None = None
    network_down_until: float = 0.0

    def take_next_session_fault(self, kind: str) -> NextSessionFault | None:
        for i, fault in enumerate(self.next_sessions):
            if fault.kind in (None, kind):
                return self.next_sessions.pop(i)
        return None

    def take_http_fault(self, path: str, websocket: bool = False) -> HttpFault | None:
        for fault in self.http:
            if fault.matches(path, websocket):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.http.remove(fault)
                return fault
        return None

    def network_is_down(self) -> bool:
        return time.monotonic() < self.network_down_until

    def take_delay(self) -> float:
        if self.message_delay_s <= 0:
            return 0.0
        if self.message_delay_remaining is not None:
            if self.message_delay_remaining <= 0:
                return 0.0
            self.message_delay_remaining -= 1
        return self.message_delay_s

    def take_garble(self, kind: str, message: dict[str, Any]) -> str | None:
        """The garble mode for this outgoing message, if one is pending and applies."""
        if self.garble_remaining <= 0 or self.garble_kind not in (None, kind):
            return None
        if not applies_to(self.garble_mode, message):
            return None
        self.garble_remaining -= 1
        return self.garble_mode
