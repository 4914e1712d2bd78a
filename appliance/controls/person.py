"""What a person sets at run time: the speaker's volume and the microphone's mute.

:class:`PersonControls` holds both, applies the volume as the speaker's gain,
confirms each change with an earcon (the volume one at the new level), keeps
both in the state directory (``controls.json``) and publishes ``volume`` and
``mute`` events. It also keeps the mute's account: the ring index the mute
began at and how many samples were muted in all. The daemon decides what a
mute means for a running session; this only says where the mute began.

A mute switch overrides what the page or a gesture set, since its position is
what a person sees; a gesture or the page may still mute and unmute while the
switch is open (unmuted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.controls.volume import ControlsFile, SavedControls, VolumeSteps
from appliance.events import ControlSource, EventBus, MuteChanged, VolumeChanged

if TYPE_CHECKING:
    from appliance.audio.playback import AudioPlayback
    from appliance.audio.ring import RingBuffer
    from appliance.config import Config

log = logging.getLogger(__name__)


class PersonControls:
    """The volume and the mute, applied, confirmed, kept and published."""

    def __init__(
        self,
        config: Config,
        ring: RingBuffer,
        speaker: AudioPlayback | None,
        events: EventBus,
        play_earcon: Callable[[str], None],
    ) -> None:
        self.ring = ring
        self.speaker = speaker
        self.events = events
        self.play_earcon = play_earcon
        self.steps = VolumeSteps.from_config(config.volume, config.audio.volume)
        self.file = ControlsFile(config.state_path)
        saved = self.file.load(SavedControls(self.steps.clamp(config.volume.initial_percent)))
        self.percent = self.steps.clamp(saved.volume_percent)
        self.muted = saved.muted
        #: Ring index where the current mute began (None: not muted).
        self.muted_from: int | None = ring.write_index if self.muted else None
        #: Ring index where the last mute ended: no session reaches back before it.
        self.unmuted_at = 0
        self._muted_before = 0  # samples of mutes that have ended

    def start(self) -> None:
        """Apply what was kept and say so (``source="start"``), without earcons."""
        self._apply_gain()
        self.events.publish(VolumeChanged(percent=self.percent, gain=self.gain, source="start"))
        self.events.publish(
            MuteChanged(muted=self.muted, source="start", muted_seconds=self.muted_seconds)
        )

    # ------------------------------------------------------------ volume

    @property
    def gain(self) -> float:
        return round(self.steps.gain(self.percent), 4)

    def step_volume(self, steps: int, source: ControlSource) -> int:
        """Step the volume; the new percent (an earcon at it confirms, even at a limit)."""
        return self.set_volume(self.steps.stepped(self.percent, steps), source)

    def set_volume(self, percent: int, source: ControlSource) -> int:
        """Set the volume to ``percent`` (clamped to the limits); the percent now in use."""
        self.percent = self.steps.clamp(percent)
        self._apply_gain()
        self._save()
        log.info("volume %d %% (gain %.3f) from %s", self.percent, self.gain, source)
        self.events.publish(VolumeChanged(percent=self.percent, gain=self.gain, source=source))
        self.play_earcon("volume")
        return self.percent

    def _apply_gain(self) -> None:
        if self.speaker is not None:
            self.speaker.volume = self.steps.gain(self.percent)

    # ------------------------------------------------------------ mute

    @property
    def muted_samples(self) -> int:
        """Capture samples muted since the start (the running mute included)."""
        running = 0 if self.muted_from is None else self.ring.write_index - self.muted_from
        return self._muted_before + max(0, running)

    @property
    def muted_seconds(self) -> float:
        return round(self.muted_samples / self.ring.rate, 3) if self.ring.rate else 0.0

    def set_muted(self, muted: bool, source: ControlSource) -> bool:
        """Mute or unmute; False when it already was so (nothing published, no earcon)."""
        if muted == self.muted:
            return False
        now = self.ring.write_index
        if muted:
            self.muted_from = now
        else:
            assert self.muted_from is not None
            self._muted_before += max(0, now - self.muted_from)
            self.muted_from = None
            self.unmuted_at = now
        self.muted = muted
        self._save()
        log.info("microphone %s from %s", "muted" if muted else "unmuted", source)
        self.events.publish(
            MuteChanged(muted=muted, source=source, muted_seconds=self.muted_seconds)
        )
        self.play_earcon("muted" if muted else "unmuted")
        return True

    def snapshot(self) -> dict[str, Any]:
        """The page's volume and mute."""
        return {
            "volume": {"percent": self.percent, "gain": self.gain},
            "mute": {"muted": self.muted, "muted_seconds": self.muted_seconds},
        }

    def _save(self) -> None:
        self.file.save(SavedControls(volume_percent=self.percent, muted=self.muted))
