"""From what a microphone delivers to the ring's int16 mono: sample format and channels.

Mic HATs (ReSpeaker 2-mic and 4-mic class) capture 32-bit (S32_LE) and
interleave two to eight channels; the ring, the stream and the spool stay
16-bit mono.  :class:`ChannelPlan` says how a block becomes ring samples:
keep one channel, or average several.  The conversion is pure integer
arithmetic (no float rounding to argue about): 32-bit samples are divided by
65536 and rounded to nearest, halves upward; a mix is the rounded mean of
its channels.  A mean of in-range values is in range, so only the one value
that rounds past +32767 (int32 full scale) is held at 32767: no clipping
surprises from mixing, whatever the channels carry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import numpy as np

SampleFormat = Literal["int16", "int32"]
SAMPLE_FORMATS: tuple[SampleFormat, ...] = ("int16", "int32")
#: The ALSA name each format goes by, for ``appliance check`` and the logs.
ALSA_FORMAT_NAMES: dict[SampleFormat, str] = {"int16": "S16_LE", "int32": "S32_LE"}
_DTYPES: dict[SampleFormat, str] = {"int16": "<i2", "int32": "<i4"}
_INT16_MAX = 32767
_INT16_MIN = -32768


@dataclasses.dataclass(frozen=True)
class ChannelPlan:
    """What a capture opens (``sample_format``, ``channels``) and keeps (``used``).

    ``used`` is the channels read, in order: one is kept as it is (after
    scaling), more than one are averaged.
    """

    sample_format: SampleFormat
    channels: int
    used: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.sample_format not in SAMPLE_FORMATS:
            raise ValueError(f"sample format must be one of {SAMPLE_FORMATS}")
        if self.channels < 1:
            raise ValueError("a capture needs at least one channel")
        if not self.used:
            raise ValueError("a capture must keep at least one channel")
        if len(set(self.used)) != len(self.used):
            raise ValueError("each channel can be mixed in only once")
        if min(self.used) < 0 or max(self.used) >= self.channels:
            raise ValueError(f"channels {list(self.used)} are not all within {self.channels}")

    @property
    def bytes_per_frame(self) -> int:
        return self.channels * (4 if self.sample_format == "int32" else 2)

    def describe(self) -> str:
        """E.g. ``S32_LE, 4 channels, mix of 0,1,2,3`` (what ``appliance check`` reports)."""
        opened = f"{self.channels} channel{'s' if self.channels > 1 else ''}"
        if len(self.used) == 1:
            kept = f"channel {self.used[0]}"
        else:
            kept = "mix of " + ",".join(map(str, self.used))
        return f"{ALSA_FORMAT_NAMES[self.sample_format]}, {opened}, {kept}"

    def to_ring(self, block: bytes) -> np.ndarray:
        """The int16 mono samples of one interleaved ``block`` (a view when nothing changes)."""
        frames = np.frombuffer(block, dtype=_DTYPES[self.sample_format])
        if self.channels > 1:
            frames = frames.reshape(-1, self.channels)
        if len(self.used) == 1:
            one = frames if self.channels == 1 else frames[:, self.used[0]]
            return one if self.sample_format == "int16" else int32_to_int16(one)
        return mix(frames, self.used, self.sample_format)


def plan_for(
    sample_format: SampleFormat,
    channel: int,
    mix_channels: Sequence[int] | None,
    channels: int | None,
    device_channels: int,
) -> ChannelPlan:
    """The plan for the settings: keep ``channel``, or average ``mix_channels``.

    ``mix_channels`` None keeps ``channel`` alone; empty mixes every channel
    opened.  ``channels`` None opens just enough for the channels used, or,
    to mix them all, as many as the device has (``device_channels``).
    """
    if mix_channels is None:
        used: tuple[int, ...] = (channel,)
    elif mix_channels:
        used = tuple(mix_channels)
    else:
        count = channels if channels is not None else max(1, device_channels)
        return ChannelPlan(sample_format, count, tuple(range(count)))
    opened = channels if channels is not None else max(used) + 1
    return ChannelPlan(sample_format, opened, used)


def int32_to_int16(samples: np.ndarray) -> np.ndarray:
    """32-bit samples scaled to 16 bits, rounded to nearest (halves up), never wrapping."""
    # (x >> 15) is x / 32768 floored; adding one and halving rounds x / 65536 half up
    # without leaving int32. Only int32 full scale rounds to 32768.
    rounded: np.ndarray = ((samples.astype(np.int32) >> 15) + 1) >> 1
    held: np.ndarray = np.minimum(rounded, _INT16_MAX)
    return held.astype(np.int16)


def mix(frames: np.ndarray, used: Sequence[int], sample_format: SampleFormat) -> np.ndarray:
    """The rounded mean of the ``used`` columns of ``frames``, as int16 (halves up)."""
    total = frames[:, used[0]].astype(np.int64)
    for column in used[1:]:
        total += frames[:, column]
    divisor = len(used) * (65536 if sample_format == "int32" else 1)
    rounded = (2 * total + divisor) // (2 * divisor)  # floor(mean + 1/2)
    return np.clip(rounded, _INT16_MIN, _INT16_MAX).astype(np.int16)
