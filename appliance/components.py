"""The typed set of parts the daemon runs over (built by ``wiring``, read by ``daemon``).

Its own module so that the daemon and the wiring share the type without
importing each other.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from appliance.controller import Controller, Gesture
from appliance.events import EventBus
from appliance.session import SessionFactory

if TYPE_CHECKING:
    from appliance.audio.capture import Microphone
    from appliance.audio.playback import AudioPlayback
    from appliance.audio.ring import RingBuffer
    from appliance.config import Config
    from appliance.connection.tokens import TokenCoordinator
    from appliance.controls import EarconPlayer
    from appliance.controls.mute import MuteSwitch
    from appliance.controls.person import PersonControls
    from appliance.outbox.delivery import Outbox
    from appliance.service import ServiceNotifier
    from appliance.spool import Spool
    from appliance.spool.uploader import Uploader
    from appliance.summary.worker import SummaryWorker


@dataclasses.dataclass(frozen=True)
class Components:
    """Everything the daemon runs over, opened and ready; closed by the stack they came with."""

    config: Config
    events: EventBus
    notifier: ServiceNotifier
    controller: Controller
    microphone: Microphone
    speaker: AudioPlayback | None
    earcons: EarconPlayer | None
    #: None when it could not be opened; ``spool_problem`` then says why.
    spool: Spool | None
    spool_problem: str | None
    uploader: Uploader | None
    #: Gestures from the button (and ``Daemon.press``), consumed by the daemon.
    gestures: asyncio.Queue[Gesture]
    #: One token coordinator per streamed mode ("live", "agent").
    tokens: Mapping[str, TokenCoordinator]
    #: How a press starts a session, per mode.
    sessions: Mapping[str, SessionFactory]
    #: Delivery of finished transcripts off the device, when enabled.
    outbox: Outbox | None = None
    #: The summary worker, when summaries are enabled and can be made (a key and a spool).
    summaries: SummaryWorker | None = None
    #: The speaker's volume and the microphone's mute, as a person set them.
    person: PersonControls | None = None
    #: The GPIO mute switch (opened by the daemon), when configured.
    mute_switch: MuteSwitch | None = None

    @property
    def ring(self) -> RingBuffer:
        return self.microphone.ring
