"""The event feed fans out without blocking."""

from __future__ import annotations

import asyncio
import threading

from appliance.events import EventBus


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe(("turn.",))
    bus.publish("state", state="idle")
    bus.publish("turn.final", text="one")
    assert [(await a.get()).kind, (await a.get()).kind] == ["state", "turn.final"]
    assert (await b.get()).data == {"text": "one"}


async def test_publish_from_another_thread_wakes_the_subscriber() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    threading.Thread(target=bus.publish, args=("level",), kwargs={"dbfs": -20.0}).start()
    event = await asyncio.wait_for(sub.get(), 5)
    assert event.data == {"dbfs": -20.0}


async def test_slow_subscriber_loses_oldest_and_counts_them() -> None:
    bus = EventBus(queue_length=4)
    sub = bus.subscribe()
    for i in range(10):
        bus.publish("level", i=i)
    assert sub.dropped == 6
    assert [(await sub.get()).data["i"] for _ in range(4)] == [6, 7, 8, 9]
