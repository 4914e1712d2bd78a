"""The level meter measures only while someone takes its events, and at once when one arrives."""

from __future__ import annotations

import asyncio

import numpy as np

from appliance.audio.capture import Level, RingSource
from appliance.audio.meter import publish_levels
from appliance.audio.ring import RingBuffer
from appliance.events import EventBus, MicLevel, StateChanged

RATE = 16_000
INTERVAL = 0.01


class CountedSource(RingSource):
    """A ring holding a tone, whose level reads are counted (the meter's work)."""

    def __init__(self) -> None:
        super().__init__()
        self.rate = RATE
        self.ring = RingBuffer(RATE, 1.0)
        tone = (8000 * np.sin(np.arange(RATE) * 2 * np.pi * 440 / RATE)).astype(np.int16)
        self.ring.write(tone, 0.0)
        self.measured = 0

    def level_dbfs(self, window_seconds: float = 0.1) -> Level:
        self.measured += 1
        return super().level_dbfs(window_seconds)


async def ticks(n: int) -> None:
    """Let the meter run for ``n`` of its intervals."""
    await asyncio.sleep(n * INTERVAL)


async def test_nothing_is_measured_while_nobody_takes_levels() -> None:
    bus = EventBus()
    bus.add_callback(lambda published: None, (StateChanged,))  # a listener, not of levels
    mic = CountedSource()
    meter = asyncio.create_task(publish_levels(mic, bus, INTERVAL))
    await ticks(10)
    meter.cancel()
    assert mic.measured == 0
    assert bus.latest(MicLevel) is None


async def test_a_page_arriving_gets_the_level_of_the_ring_and_then_a_stream() -> None:
    bus = EventBus()
    mic = CountedSource()
    meter = asyncio.create_task(publish_levels(mic, bus, INTERVAL))
    await ticks(3)
    page = bus.subscribe((MicLevel,))
    first = await asyncio.wait_for(page.get(), 5)
    second = await asyncio.wait_for(page.get(), 5)
    meter.cancel()
    assert first.event.dbfs == round(mic.level_dbfs().rms_dbfs, 1) > -30.0
    assert second.seq > first.seq


async def test_measuring_stops_when_the_last_listener_leaves() -> None:
    bus = EventBus()
    mic = CountedSource()
    meter = asyncio.create_task(publish_levels(mic, bus, INTERVAL))
    page = bus.subscribe()
    await asyncio.wait_for(page.get(), 5)
    page.close()
    measured = mic.measured
    await ticks(10)
    meter.cancel()
    assert mic.measured == measured


async def test_a_callback_for_every_kind_keeps_the_meter_running() -> None:
    bus = EventBus()
    levels: list[float] = []
    seen = asyncio.Event()

    def keep(published) -> None:
        if isinstance(published.event, MicLevel):
            levels.append(published.event.dbfs)
            if len(levels) >= 3:
                seen.set()

    bus.add_callback(keep)
    meter = asyncio.create_task(publish_levels(CountedSource(), bus, INTERVAL))
    await asyncio.wait_for(seen.wait(), 5)
    meter.cancel()
    assert len(levels) >= 3


async def test_a_sound_in_the_first_half_of_a_long_block_moves_the_meter() -> None:
    """A reading covers all audio since the last one, not just the newest 100 ms: a
    200 ms block whose sound ends halfway is still heard."""
    bus = EventBus()
    mic = CountedSource()
    mic.ring.write(np.zeros(RATE, dtype=np.int16), 1.0)  # a second of silence after the tone
    page = bus.subscribe((MicLevel,))
    meter = asyncio.create_task(publish_levels(mic, bus, INTERVAL))
    try:
        first = await asyncio.wait_for(page.get(), 5)
        assert first.event.dbfs == -120.0
        half = RATE // 10
        tone = (8000 * np.sin(np.arange(half) * 2 * np.pi * 440 / RATE)).astype(np.int16)
        mic.ring.write(np.concatenate([tone, np.zeros(half, dtype=np.int16)]), 2.0)
        readings = [(await asyncio.wait_for(page.get(), 5)).event.dbfs for _ in range(3)]
    finally:
        meter.cancel()
    assert max(readings) > -30.0, readings
