"""Earcons: short sounds that say "I heard you" without looking at the device.

Rendered once with numpy (int16 mono, default 24 kHz, the playback rate) and
cached; played by writing the bytes to the playback stream. Each has a
raised-cosine fade in and out so it never clicks. A rising chirp means
"started", a falling one "stopped", a low double tone "error", three rising
blips "kept offline for later", two equal blips "mode changed", one short
tone "the volume is now this loud" (played at the new volume), two falling
low tones "muted" (also the answer to a press while muted), two rising ones
"unmuted".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from appliance.config import EarconsConfig

log = logging.getLogger(__name__)

DEFAULT_RATE = 24000
FADE_SECONDS = 0.008
EARCON_NAMES = ("start", "stop", "error", "saved", "mode", "volume", "muted", "unmuted")

# (start Hz, end Hz, seconds) per tone; None = a gap of that many seconds.
_SHAPES: dict[str, list[tuple[float, float, float] | float]] = {
    "start": [(660.0, 990.0, 0.12)],
    "stop": [(990.0, 660.0, 0.12)],
    "error": [(330.0, 330.0, 0.15), 0.06, (330.0, 330.0, 0.15)],
    "saved": [(660.0, 660.0, 0.06), 0.03, (880.0, 880.0, 0.06), 0.03, (1100.0, 1100.0, 0.06)],
    "mode": [(880.0, 880.0, 0.06), 0.05, (880.0, 880.0, 0.06)],
    "volume": [(740.0, 740.0, 0.15)],
    "muted": [(523.0, 523.0, 0.08), 0.04, (392.0, 392.0, 0.12)],
    "unmuted": [(392.0, 392.0, 0.08), 0.04, (523.0, 523.0, 0.12)],
}


def _tone(f0: float, f1: float, seconds: float, rate: int) -> np.ndarray:
    n = round(seconds * rate)
    t = np.arange(n) / rate
    # Linear chirp: the phase is the integral of the instantaneous frequency.
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    wave = np.sin(phase)
    fade = min(int(FADE_SECONDS * rate), n // 2)
    if fade:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(fade) / fade)
        wave[:fade] *= ramp
        wave[n - fade :] *= ramp[::-1]
    return wave


def render_earcon(name: str, rate: int = DEFAULT_RATE, volume: float = 0.3) -> bytes:
    """The earcon ``name`` as int16 little-endian mono PCM at ``rate``, peak ``volume``."""
    if name not in _SHAPES:
        raise ValueError(f"unknown earcon {name!r} (known: {', '.join(EARCON_NAMES)})")
    parts = []
    for part in _SHAPES[name]:
        if isinstance(part, tuple):
            parts.append(_tone(*part, rate))
        else:
            parts.append(np.zeros(round(part * rate)))
    wave = np.concatenate(parts) * max(0.0, min(1.0, volume))
    return (wave * 32767).astype("<i2").tobytes()


class EarconSink(Protocol):
    """Where earcons go: int16 mono bytes (a speaker with ``write_own_sound`` notes them as
    its own, so the microphone's reads silence them)."""

    def write(self, pcm16: bytes, /) -> object: ...


class EarconPlayer:
    """Plays the configured earcons into the playback stream (``write(bytes)``).

    ``playback`` is anything with ``write(bytes)`` taking int16 mono at
    ``rate``; its return value (e.g. an awaitable) is passed back from
    :meth:`play`. Disabled earcons return None and write nothing.
    """

    def __init__(
        self, config: EarconsConfig, playback: EarconSink | None, rate: int = DEFAULT_RATE
    ) -> None:
        self.config = config
        self.playback = playback
        self.rate = rate
        self._cache: dict[str, bytes] = {}

    def enabled(self, name: str) -> bool:
        if not self.config.enabled or self.playback is None:
            return False
        # "mode" has no switch of its own: it follows the master switch.
        return bool(getattr(self.config, name, True))

    def sound(self, name: str) -> bytes:
        data = self._cache.get(name)
        if data is None:
            data = render_earcon(name, self.rate, self.config.volume)
            self._cache[name] = data
        return data

    def play(self, name: str) -> object:
        """Write earcon ``name`` to the playback stream if it is enabled."""
        if not self.enabled(name):
            return None
        # The speaker notes when its own sounds play, so the microphone's reads silence them.
        assert self.playback is not None  # enabled() says so
        write: Callable[[bytes], object] = getattr(
            self.playback, "write_own_sound", self.playback.write
        )
        try:
            return write(self.sound(name))
        except Exception:  # a missing speaker must not stop a session
            log.warning("earcon %s could not be played", name, exc_info=True)
            return None
