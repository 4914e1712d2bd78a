"""The microphone's level onto the event feed: the page's meter, the LEDs, integrations.

Measured from the ring every ``audio.level_interval_seconds`` on the event
loop, never in the capture callback (which only copies frames), and only while
someone takes the events (:meth:`EventBus.wants`). One event per interval at
most, whatever the capture block size: readers get a coalesced value, the
newest 100 ms of audio, not one per block.
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


def current_level(microphone: Microphone) -> MicLevel:
    """The level of the newest audio, rounded to 0.1 dB and floored at :data:`FLOOR_DBFS`."""
    rms = microphone.level_dbfs().rms_dbfs
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
    try:
        while True:
            if not events.wants(MicLevel):
                listeners_changed.clear()
                if not events.wants(MicLevel):
                    await listeners_changed.wait()
                continue
            events.publish(current_level(microphone))
            await asyncio.sleep(interval)
    finally:
        unwatch()
