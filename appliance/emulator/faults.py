"""Fault plan: what the emulator should break next, set through the control API."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class NextSessionFault:
    """Applied to the next session that opens (``kind`` None: either API)."""

    action: str  # "drop" or "close"
    kind: str | None
    after_s: float
    code: int = 1000
    reason: str = ""


@dataclass
class HttpFault:
    status: int
    remaining: int
    retry_after: int | None
    path_prefix: str | None


@dataclass
class FaultPlan:
    next_sessions: list[NextSessionFault] = field(default_factory=list)
    http: list[HttpFault] = field(default_factory=list)
    stall_until: float = 0.0
    stall_kind: str | None = None
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

    def take_http_fault(self, path: str) -> HttpFault | None:
        for fault in self.http:
            if fault.path_prefix is None or path.startswith(fault.path_prefix):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.http.remove(fault)
                return fault
        return None

    def network_is_down(self) -> bool:
        return time.monotonic() < self.network_down_until

    def stalled_for(self, kind: str) -> float:
        if self.stall_kind not in (None, kind):
            return 0.0
        return max(0.0, self.stall_until - time.monotonic())

    def take_delay(self) -> float:
        if self.message_delay_s <= 0:
            return 0.0
        if self.message_delay_remaining is not None:
            if self.message_delay_remaining <= 0:
                return 0.0
            self.message_delay_remaining -= 1
        return self.message_delay_s

    def take_garble(self, kind: str) -> str | None:
        if self.garble_remaining <= 0 or self.garble_kind not in (None, kind):
            return None
        self.garble_remaining -= 1
        return self.garble_mode
