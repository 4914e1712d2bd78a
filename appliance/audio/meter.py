"""The microphone's level onto the event feed: the page's meter, the LEDs, integrations.

Measured from the ring every ``audio.level_interval_seconds`` on the event
loop, never in the capture callback (which only copies frames), and only while
someone takes the events (:meth:`EventBus.wants`). One event per interval at
most, whatever the capture block size: each reading covers the audio captured
since the one before, so a short sound is never left between two readings
(with 200 ms blocks, the newest 100 ms alone missed every sound in the first
half of a block).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING

from appliance.events import EventBus, MicLevel

if TYPE_CHECKING:
    from appliance.audio.capture import Microphone

#: Silence (and a stopped microphone) is reported as this rather than -inf (not JSON).
FLOOR_DBFS = -120.0
#: A reading covers the audio since the last one: at least the newest this much...
MIN_WINDOW_SECONDS = 0.1
#: ...and at most this much (the first reading after a quiet spell with no listener).
MAX_WINDOW_SECONDS = 1.0


def current_level(microphone: Microphone, window_seconds: float = MIN_WINDOW_SECONDS) -> MicLevel:
    """The level of the newest ``window_seconds`` of audio, rounded to 0.1 dB and
    floored at :data:`FLOOR_DBFS`."""
    rms = microphone.level_dbfs(window_seconds).rms_dbfs
    dbfs = rms if math.isfinite(rms) else FLOOR_DBFS
    return MicLevel(dbfs=round(max(FLOOR_DBFS, dbfs), 1))


async def publish_levels(microphone: Microphone, events: EventBus, interval: float) -> None:
    """Publish the level every ``interval`` seconds while anyone takes it, until cancelled.

    With no listener (no page open, no MQTT, no callback that asks for levels) it
    measures nothing and sleeps until one arrives: a device is idle most of its
    life, and 4 wake-ups a second were most of what it did then.  A listener's
    arrival gets a level at once, then one per interval.
    """
    loop = asyncio.get_running_loop()
    listeners_changed = asyncio.Event()

    def changed() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is measuring
            loop.call_soon_threadsafe(listeners_changed.set)

    unwatch = events.watch_listeners(changed)
    measured_to: int | None = None  # the ring index the last reading covered up to
    try:
        while True:
            if not events.wants(MicLevel):
                listeners_changed.clear()
                if not events.wants(MicLevel):
                    measured_to = None
                    await listeners_changed.wait()
                continue
            ring = microphone.ring
            new = 0 if measured_to is None else ring.write_index - measured_to
            window = min(MAX_WINDOW_SECONDS, max(MIN_WINDOW_SECONDS, new / ring.rate))
            measured_to = ring.write_index
            events.publish(current_level(microphone, window))
            await asyncio.sleep(interval)
    finally:
        unwatch()
