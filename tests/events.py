"""Collecting what a test's event bus carried."""

from __future__ import annotations

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
