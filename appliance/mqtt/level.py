"""The microphone's level onto the event feed, for an integration that shows it.

The daemon does not publish ``level`` events by itself (the page reads the
level from its status snapshot); with MQTT on, this task measures it from the
ring every ``mqtt.level_interval_seconds`` on the event loop, never on the
capture thread, so the bridge itself only ever reads the feed.
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


async def publish_levels(microphone: Microphone, events: EventBus, interval: float) -> None:
    """Publish the level every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        rms = microphone.level_dbfs().rms_dbfs
        dbfs = rms if math.isfinite(rms) else FLOOR_DBFS
        events.publish(MicLevel(dbfs=round(max(FLOOR_DBFS, dbfs), 1)))
