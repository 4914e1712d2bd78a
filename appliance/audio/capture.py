"""Always-on microphone capture into the ring buffer, surviving device loss.

The PortAudio callback does one thing: copy the block (one channel of it,
through a numpy view, or a 32-bit or multi-channel block converted by its
:class:`~appliance.audio.channels.ChannelPlan`) into the preallocated
:class:`RingBuffer` and note the time and status flags.  Everything else,
level metering, noticing that the device died, reopening it with backoff,
happens in a supervisor thread or on demand in the caller's thread.

A USB microphone that is unplugged does not kill the process: the capture
goes to ``LOST``, tells the ``on_state`` callback, retries with exponential
backoff, and resumes into the same ring.  The ring index stays gapless and
monotonic; the missing wall-clock time is recorded as a discontinuity.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyaudio

from appliance.audio.channels import ChannelPlan, SampleFormat, plan_for
from appliance.audio.devices import PREFERRED_INPUT_RATES, choose_rate, find_device
from appliance.audio.ring import DEFAULT_HISTORY_SECONDS, RingBuffer
from appliance.audio.stream import (
    DEFAULT_RETRY_INITIAL,
    DEFAULT_RETRY_MAX,
    StateCallback,
    StreamState,
    StreamStatus,
    SupervisedStream,
)
from appliance.audio.watchdog import StreamLimits

__all__ = ["AudioCapture", "Level", "RingSource", "StreamState", "measure_level"]

# 100 ms when a caller names none. Every wake-up of a Python thread costs far more
# than its work (cold caches): on the PulseAudio test stack 50 ms blocks cost ~0.25
# CPU-s per audio minute more in live mode than 100 ms, and 200 ms blocks (one per
# live frame) ~0.1 less. The daemon picks the block by mode
# (appliance.config.CAPTURE_BLOCK_MS_BY_MODE); this is for embedders and tools.
DEFAULT_BLOCK_MS = 100
SILENCE_DBFS = -120.0


@dataclass(frozen=True, slots=True)
class Level:
    """Signal level over a recent window, dBFS (full scale sine ~ -3 dB RMS)."""

    rms_dbfs: float
    peak_dbfs: float


def measure_level(samples: np.ndarray) -> Level:
    if len(samples) == 0:
        return Level(SILENCE_DBFS, SILENCE_DBFS)
    x = samples.astype(np.float32)
    rms = float(np.sqrt(np.mean(x * x)))
    peak = float(np.max(np.abs(x)))

    def db(v: float) -> float:
        return max(SILENCE_DBFS, 20.0 * float(np.log10(v / 32768.0))) if v > 0 else SILENCE_DBFS

    return Level(db(rms), db(peak))


_PORTAUDIO_FORMATS: dict[SampleFormat, int] = {"int16": pyaudio.paInt16, "int32": pyaudio.paInt32}


class Microphone(Protocol):
    """The capture side every source offers (PortAudio capture or a paced WAV)."""

    ring: RingBuffer
    overflows: int
    device_label: str
    #: time.monotonic() of the last block; 0.0 before the first.
    last_callback_time: float

    @property
    def reopening(self) -> bool: ...

    def level_dbfs(self, window_seconds: float = ...) -> Level: ...

    def stop(self) -> None: ...


class RingSource(StreamStatus):
    """What capture and the paced file source share: a ring, a rate, overflows, a level.

    ``overflows`` counts blocks the producer reported as overrun (audio lost
    before it reached the ring).
    """

    rate: int
    ring: RingBuffer

    def __init__(self, on_state: StateCallback | None = None) -> None:
        super().__init__(on_state)
        self.overflows = 0

    def level_dbfs(self, window_seconds: float = 0.1) -> Level:
        """RMS and peak of the newest ``window_seconds`` (read from the ring, any thread)."""
        ring = getattr(self, "ring", None)
        if ring is None:
            return Level(SILENCE_DBFS, SILENCE_DBFS)
        n = int(window_seconds * ring.rate)
        return measure_level(ring.read(max(ring.oldest_index, ring.write_index - n), n).samples)


class AudioCapture(SupervisedStream, RingSource):
    """PortAudio input stream (callback mode) feeding a :class:`RingBuffer`.

    ``device``: name substring (None = default input).  ``rate``: None picks
    the first of ``preferred_rates`` the device supports.  ``channels``: how
    many channels to open (None = just enough, see
    :func:`~appliance.audio.channels.plan_for`); ``channel``: which one is
    kept, unless ``mix_channels`` names the ones averaged instead (empty: all
    opened).  ``sample_format``: ``int16`` (S16_LE) or ``int32`` (S32_LE, mic
    HATs); the ring is int16 either way.  ``start()`` opens the device
    (raising if it cannot be opened the first time, because the ring's rate
    depends on it) and creates ``ring``; losses after that are retried
    forever with backoff, at the same rate.  ``limits``: how long a
    (re)opened device may take to deliver steadily, and how long it may then
    go quiet (:class:`StreamLimits`).
    """

    kind = "capture"
    # A missing speaker never costs the microphone audio: only the speaker yields.
    yields_to_rescan = False

    def __init__(
        self,
        device: str | None = None,
        rate: int | None = None,
        *,
        channels: int | None = None,
        channel: int = 0,
        mix_channels: tuple[int, ...] | None = None,
        sample_format: SampleFormat = "int16",
        block_ms: int = DEFAULT_BLOCK_MS,
        history_seconds: float = DEFAULT_HISTORY_SECONDS,
        preferred_rates: tuple[int, ...] = PREFERRED_INPUT_RATES,
        on_state: StateCallback | None = None,
        limits: StreamLimits | None = None,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        RingSource.__init__(self, on_state)
        SupervisedStream.__init__(
            self,
            block_ms,
            on_state,
            limits,
            retry_initial,
            retry_max,
        )
        if channel < 0 or (channels is not None and channel >= channels):
            raise ValueError("channel must be within channels")
        self.device_name = device
        self.requested_rate = rate
        self.requested_channels = channels
        self.channel = channel
        self.mix_channels = mix_channels
        self.sample_format: SampleFormat = sample_format
        # Checked now (a wrong channel list fails at construction); settled at the first
        # open, where mixing every channel learns how many the device has.
        self.plan: ChannelPlan = plan_for(sample_format, channel, mix_channels, channels, 1)
        self.history_seconds = history_seconds
        self.preferred_rates = preferred_rates

    def _callback(
        self,
        in_data: bytes | None,
        frame_count: int,
        time_info: Mapping[str, float],
        status: int,
    ) -> tuple[bytes | None, int]:
        # Hot path: no logging, no locks, no allocation beyond a view.
        assert in_data is not None  # an input stream's callback always gets its block
        now = time.monotonic()
        if status & pyaudio.paInputOverflow:
            self.overflows += 1
        samples = self.plan.to_ring(in_data)
        self.ring.write(samples, now - frame_count / self.rate)
        self.blocks += 1
        self.last_callback_time = now
        return (None, pyaudio.paContinue)

    def _open_stream(self, pa: pyaudio.PyAudio, first: bool) -> pyaudio.Stream:
        info = find_device(pa, self.device_name, "input")
        if first:
            self.plan = plan_for(
                self.sample_format,
                self.channel,
                self.mix_channels,
                self.requested_channels,
                info.max_input_channels,
            )
        pa_format = _PORTAUDIO_FORMATS[self.plan.sample_format]
        if first:
            self.rate = choose_rate(
                pa,
                info,
                "input",
                self.plan.channels,
                self.requested_rate,
                self.preferred_rates,
                pa_format,
            )
            self.ring = RingBuffer(self.rate, self.history_seconds)
        else:
            # The ring's rate is fixed: the device must come back at the same rate.
            choose_rate(pa, info, "input", self.plan.channels, self.rate, (), pa_format)
        self.device_label = f"{info.name} (#{info.index}) {self.rate} Hz"
        return pa.open(
            rate=self.rate,
            channels=self.plan.channels,
            format=pa_format,
            input=True,
            input_device_index=info.index,
            frames_per_buffer=max(1, self.rate * self.block_ms // 1000),
            stream_callback=self._callback,
            start=True,
        )

    def _on_lost(self) -> None:
        self.ring.mark_discontinuity()
