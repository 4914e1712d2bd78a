"""Collecting what a test's event bus carried."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from appliance.events import Event, EventBus, Published

E = TypeVar("E", bound=Event)


def collect(bus: EventBus, kind: type[E]) -> list[E]:
    """Every ``kind`` event published on ``bus`` from now on, in order."""
    seen: list[E] = []

    def keep(published: Published[Event]) -> None:
        if isinstance(published.event, kind):
            seen.append(published.event)

    bus.add_callback(keep)
    return seen


async def wait_for(check: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
