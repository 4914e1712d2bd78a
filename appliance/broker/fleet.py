"""The fleet's latest state, from what each device says when it asks for a token.

A device may send, with any token request, its version, its spool backlog
(recordings waiting) and its last error, as headers (``X-Appliance-Version``,
``X-Appliance-Spool-Backlog``, ``X-Appliance-Last-Error``) or query fields
(``version``, ``spool_backlog``, ``last_error``). The broker keeps the latest
of each per device, with when it last asked and what it was answered, so an
owner sees which devices went quiet or are backing up. Pure: time passed in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from appliance.secrets import redact

HEADER_FIELDS = {
    "x-appliance-version": "version",
    "x-appliance-spool-backlog": "spool_backlog",
    "x-appliance-last-error": "last_error",
}
QUERY_FIELDS = ("version", "spool_backlog", "last_error")


@dataclasses.dataclass
class DeviceState:
    name: str
    last_seen: float = 0.0  # Unix time of its last authenticated request
    last_kind: str | None = None
    last_result: str | None = None
    version: str | None = None
    spool_backlog: int | None = None
    last_error: str | None = None

    def as_json(self, now: float) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["seconds_since_seen"] = round(max(0.0, now - self.last_seen), 1)
        return data


def _clean(text: str, limit: int) -> str:
    """Printable, redacted, at most ``limit`` characters (it goes into logs and /metrics)."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return redact(printable)[:limit]


def parse_checkin(
    headers: Mapping[str, str], query: Mapping[str, str], limit: int
) -> dict[str, Any]:
    """The check-in fields present in a request (headers win over query fields)."""
    raw: dict[str, str] = {k: query[k] for k in QUERY_FIELDS if k in query}
    for header, field in HEADER_FIELDS.items():
        if header in headers:
            raw[field] = headers[header]
    out: dict[str, Any] = {}
    for field, value in raw.items():
        if field == "spool_backlog":
            try:
                backlog = int(value)
            except ValueError:
                continue
            if 0 <= backlog <= 10**9:
                out[field] = backlog
        else:
            out[field] = _clean(value, limit) or None
    return out


class Fleet:
    """Latest state per device, at most ``max_entries`` (the least recently seen go first)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._devices: dict[str, DeviceState] = {}

    def note(
        self, name: str, now: float, kind: str, result: str, checkin: Mapping[str, Any]
    ) -> DeviceState:
        state = self._devices.pop(name, None) or DeviceState(name)
        self._devices[name] = state
        while len(self._devices) > self.max_entries:
            self._devices.pop(next(iter(self._devices)))
        state.last_seen, state.last_kind, state.last_result = now, kind, result
        for field, value in checkin.items():
            setattr(state, field, value)
        return state

    def devices(self) -> list[DeviceState]:
        return sorted(self._devices.values(), key=lambda d: d.name)
