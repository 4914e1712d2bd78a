"""Always-on microphone capture into the ring buffer, surviving device loss.

The PortAudio callback does one thing: copy the block (one channel of it,
through a numpy view) into the preallocated :class:`RingBuffer` and note the
time and status flags.  Everything else, level metering, noticing that the
device died, reopening it with backoff, happens in a supervisor thread or on
demand in the caller's thread.

A USB microphone that is unplugged does not kill the process: the capture
goes to ``LOST``, tells the ``on_state`` callback, retries with exponential
backoff, and resumes into the same ring.  The ring index stays gapless and
monotonic; the missing wall-clock time is recorded as a discontinuity.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyaudio

from appliance.audio.devices import PREFERRED_INPUT_RATES, choose_rate, find_device
from appliance.audio.ring import DEFAULT_HISTORY_SECONDS, RingBuffer

log = logging.getLogger(__name__)

DEFAULT_BLOCK_MS = 20
# PortAudio/PulseAudio can take ~2 s to deliver the first block after open().
DEFAULT_FIRST_CALLBACK_TIMEOUT = 5.0
# After the first block, silence this long (or 10 blocks, if longer) means the stream died.
DEFAULT_STALL_TIMEOUT = 1.0
DEFAULT_RETRY_INITIAL = 0.5
DEFAULT_RETRY_MAX = 10.0
SUPERVISOR_PERIOD = 0.05
SILENCE_DBFS = -120.0


class StreamState(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"  # opening, or waiting for the first block
    RUNNING = "running"
    LOST = "lost"  # device gone or stream dead; retrying


StateCallback = Callable[[StreamState, str], None]


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


class RingSource:
    """What capture and the paced file source share: a ring, liveness and level.

    ``last_callback_time`` (time.monotonic(), 0.0 before the first block) and
    ``overflows`` are plain attributes written by the producing thread, cheap
    for LEDs, ``appliance check`` and the watchdog to read.
    """

    rate: int
    ring: RingBuffer

    def __init__(self, on_state: StateCallback | None = None) -> None:
        self.last_callback_time = 0.0
        self.overflows = 0
        self.blocks = 0
        self.state = StreamState.STOPPED
        self.state_detail = ""
        self.losses = 0
        self._on_state = on_state

    def _set_state(self, state: StreamState, detail: str = "") -> None:
        if state == self.state and detail == self.state_detail:
            return
        if state == StreamState.LOST and self.state != StreamState.LOST:
            self.losses += 1
        self.state, self.state_detail = state, detail
        if self._on_state is not None:
            try:
                self._on_state(state, detail)
            except Exception:
                log.exception("capture state callback failed")

    def seconds_since_last_block(self, now: float | None = None) -> float:
        """Liveness: how long ago the last block arrived (inf before the first)."""
        if not self.last_callback_time:
            return float("inf")
        return (time.monotonic() if now is None else now) - self.last_callback_time

    def level_dbfs(self, window_seconds: float = 0.1) -> Level:
        """RMS and peak of the newest ``window_seconds`` (read from the ring, any thread)."""
        ring = getattr(self, "ring", None)
        if ring is None:
            return Level(SILENCE_DBFS, SILENCE_DBFS)
        n = int(window_seconds * ring.rate)
        return measure_level(ring.read(max(ring.oldest_index, ring.write_index - n), n).samples)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class AudioCapture(RingSource):
    """PortAudio input stream (callback mode) feeding a :class:`RingBuffer`.

    ``device``: name substring (None = default input).  ``rate``: None picks
    the first of ``preferred_rates`` the device supports.  ``channels``: how
    many channels to open (None = ``channel + 1``); ``channel``: which one is
    kept.  ``start()`` opens the device (raising if it cannot be opened the
    first time, because the rate of the ring depends on it); losses after that
    are retried forever with backoff.
    """

    def __init__(
        self,
        device: str | None = None,
        rate: int | None = None,
        *,
        channels: int | None = None,
        channel: int = 0,
        block_ms: int = DEFAULT_BLOCK_MS,
        history_seconds: float = DEFAULT_HISTORY_SECONDS,
        preferred_rates: tuple[int, ...] = PREFERRED_INPUT_RATES,
        on_state: StateCallback | None = None,
        first_callback_timeout: float = DEFAULT_FIRST_CALLBACK_TIMEOUT,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        super().__init__(on_state)
        if channel < 0 or (channels is not None and channel >= channels):
            raise ValueError("channel must be within channels")
        self.device_name = device
        self.requested_rate = rate
        self.channels = channels if channels is not None else channel + 1
        self.channel = channel
        self.block_ms = block_ms
        self.history_seconds = history_seconds
        self.preferred_rates = preferred_rates
        self.first_callback_timeout = first_callback_timeout
        self.stall_timeout = stall_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.device_label = ""
        self._pa: pyaudio.PyAudio | None = None
        self._stream: pyaudio.Stream | None = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._opened_at = 0.0
        self._samples_per_block = 0
        self.last_block_before_open = 0

    # ------------------------------------------------------------ hot path

    def _callback(self, in_data, frame_count, time_info, status):
        now = time.monotonic()
        if status & pyaudio.paInputOverflow:
            self.overflows += 1
        samples = np.frombuffer(in_data, dtype=np.int16)
        if self.channels > 1:
            samples = samples[self.channel :: self.channels]
        self.ring.write(samples, now - frame_count / self.rate)
        self.blocks += 1
        self.last_callback_time = now
        return (None, pyaudio.paContinue)

    # ----------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Open the device and start capturing; raises if the first open fails."""
        if self._supervisor is not None:
            return
        self._stop.clear()
        self._set_state(StreamState.STARTING, "opening")
        try:
            self._open(first=True)
        except Exception:
            self._close()
            self._set_state(StreamState.STOPPED, "open failed")
            raise
        self._supervisor = threading.Thread(
            target=self._supervise, name="audio-capture-supervisor", daemon=True
        )
        self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        self._close()
        self._set_state(StreamState.STOPPED)

    def _open(self, first: bool) -> None:
        self._pa = pyaudio.PyAudio()
        info = find_device(self._pa, self.device_name, "input")
        if first:
            self.rate = choose_rate(
                self._pa, info, "input", self.channels, self.requested_rate, self.preferred_rates
            )
            self.ring = RingBuffer(self.rate, self.history_seconds)
        else:
            # The ring's rate is fixed: the device must come back at the same rate.
            choose_rate(self._pa, info, "input", self.channels, self.rate, ())
        self._samples_per_block = max(1, self.rate * self.block_ms // 1000)
        self.device_label = f"{info.name} (#{info.index}) {self.rate} Hz"
        self._opened_at = time.monotonic()
        self.last_block_before_open = self.blocks
        self._stream = self._pa.open(
            rate=self.rate,
            channels=self.channels,
            format=pyaudio.paInt16,
            input=True,
            input_device_index=info.index,
            frames_per_buffer=self._samples_per_block,
            stream_callback=self._callback,
            start=True,
        )
        log.info("capture opened %s, %d ms blocks", self.device_label, self.block_ms)

    def _close(self) -> None:
        stream, self._stream = self._stream, None
        pa, self._pa = self._pa, None
        if stream is not None:
            try:
                stream.stop_stream()
            except Exception:
                log.debug("stop_stream failed", exc_info=True)
            try:
                stream.close()
            except Exception:
                log.debug("close failed", exc_info=True)
        if pa is not None:
            pa.terminate()

    def _stream_dead(self, now: float) -> str | None:
        """Why the open stream should be considered lost, or None if it is healthy."""
        stream = self._stream
        if stream is None:
            return "no stream"
        try:
            if not stream.is_active():
                return "stream stopped"
        except Exception as exc:
            return f"stream error: {exc}"
        if self.blocks == self.last_block_before_open:
            if now - self._opened_at > self.first_callback_timeout:
                return "no audio after open"
            return None
        stall = max(self.stall_timeout, 10 * self.block_ms / 1000)
        if now - self.last_callback_time > stall:
            return f"no audio for {now - self.last_callback_time:.1f} s"
        return None

    def _supervise(self) -> None:
        delay = self.retry_initial
        while not self._stop.wait(SUPERVISOR_PERIOD):
            now = time.monotonic()
            if self._stream is not None:
                reason = self._stream_dead(now)
                if reason is None:
                    if self.blocks != self.last_block_before_open:
                        self._set_state(StreamState.RUNNING, self.device_label)
                        delay = self.retry_initial
                    continue
                log.warning("capture lost: %s (%s)", reason, self.device_label)
                self._close()
                self.ring.mark_discontinuity()
                self._set_state(StreamState.LOST, reason)
            # Reopen with exponential backoff.
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.retry_max)
            try:
                self._open(first=False)
                self._set_state(StreamState.STARTING, "reopened")
            except Exception as exc:
                self._close()
                log.info("capture reopen failed: %s; retry in %.1f s", exc, delay)
                self._set_state(StreamState.LOST, f"reopen failed: {exc}")
