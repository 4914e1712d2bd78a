"""The speaker's volume and the microphone's mute, as a person set them, kept across restarts.

:class:`VolumeSteps` is pure: percent in, the clamped next percent and the
gain out. The gain is the daemon's own, applied in the playback callback
(``AudioPlayback.volume``) to everything the speaker plays: agent replies and
earcons alike. It is ``audio.volume`` (the installer's calibration) times
(percent / 100) squared, so each step sounds about as much louder as the last.
An ALSA hardware mixer is not used: the daemon's gain works the same on every
device (USB speakers, HATs, PulseAudio/PipeWire, the file sink), needs no
extra dependency, and cannot be changed behind the daemon's back by another
mixer client.

:class:`ControlsFile` keeps ``{"volume_percent", "muted"}`` in the state
directory: written to a temporary file, fsynced, renamed over the old one,
the directory fsynced, so a power cut leaves the old or the new file, never a
torn one. A missing or unreadable file means the configured defaults.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

from appliance.config import VolumeConfig

log = logging.getLogger(__name__)

#: The file in the state directory.
CONTROLS_FILE = "controls.json"
#: A larger file is not read (it is not ours).
MAX_CONTROLS_FILE_BYTES = 4096


@dataclasses.dataclass(frozen=True)
class VolumeSteps:
    """Where a step up or down goes from a percent, within the configured limits."""

    step: int = 10
    minimum: int = 10
    maximum: int = 100
    full_gain: float = 1.0  # audio.volume: the gain at 100 %

    @classmethod
    def from_config(cls, config: VolumeConfig, full_gain: float) -> VolumeSteps:
        low = min(config.minimum_percent, config.maximum_percent)
        return cls(config.step_percent, low, config.maximum_percent, full_gain)

    def clamp(self, percent: int) -> int:
        return min(max(int(percent), self.minimum), self.maximum)

    def stepped(self, percent: int, steps: int) -> int:
        """``percent`` moved by ``steps`` steps (negative: down), kept within the limits."""
        return self.clamp(percent + steps * self.step)

    def gain(self, percent: int) -> float:
        """The playback gain for ``percent``."""
        return self.full_gain * (self.clamp(percent) / 100) ** 2


@dataclasses.dataclass(frozen=True)
class SavedControls:
    """What a person set, as the state directory keeps it."""

    volume_percent: int
    muted: bool = False


class ControlsFile:
    """``controls.json`` in the state directory (atomic replace; readable by its owner's group)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CONTROLS_FILE

    def load(self, default: SavedControls) -> SavedControls:
        """The saved controls, or ``default`` where the file is missing or not understood."""
        try:
            with self.path.open("rb") as f:
                raw = f.read(MAX_CONTROLS_FILE_BYTES + 1)
        except FileNotFoundError:
            return default
        except OSError as exc:
            log.warning("cannot read %s (using the defaults): %s", self.path, exc)
            return default
        try:
            if len(raw) > MAX_CONTROLS_FILE_BYTES:
                raise ValueError("too large")
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            log.warning("ignoring %s (using the defaults): %s", self.path, exc)
            return default
        percent = data.get("volume_percent")
        muted = data.get("muted")
        return SavedControls(
            volume_percent=percent
            if isinstance(percent, int) and not isinstance(percent, bool) and 0 <= percent <= 100
            else default.volume_percent,
            muted=muted if isinstance(muted, bool) else default.muted,
        )

    def save(self, controls: SavedControls) -> None:
        """Replace the file atomically; a failure is logged (the setting still applies now)."""
        body = json.dumps(dataclasses.asdict(controls), sort_keys=True).encode() + b"\n"
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
            try:
                os.write(fd, body)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as exc:
            log.error("cannot keep the volume and mute in %s: %s", self.path, exc)
