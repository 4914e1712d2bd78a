"""Backoff stays within its full-jitter envelope; the event feed fans out without blocking."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from appliance.backoff import Backoff
from appliance.events import EventBus


def test_backoff_delays_stay_under_a_doubling_capped_ceiling() -> None:
    backoff = Backoff(base=0.5, cap=8.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceiling = backoff.ceiling()
        delay = backoff.next_delay()
        assert 0 <= delay <= ceiling
        ceilings.append(ceiling)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_backoff_is_jittered_not_lockstep() -> None:
    delays = {Backoff(1.0, 30.0, rng=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


def test_backoff_reset_starts_small_again() -> None:
    backoff = Backoff(0.5, 30.0)
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.ceiling() == 0.5


def test_backoff_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0, cap=1)


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
