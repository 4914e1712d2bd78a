"""The microphone's level onto the event feed: the page's meter, the LEDs, integrations.

Measured from the ring every ``audio.level_interval_seconds`` on the event
loop, never in the capture callback (which only copies frames). One event per
interval at most, whatever the capture block size: readers get a coalesced
value, the newest 100 ms of audio, not one per block.
"""

from __future__ import annotations

import asyncio
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
    """Publish the level every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        events.publish(current_level(microphone))
