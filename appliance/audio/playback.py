"""One warm speaker stream fed from a small jitter buffer, with fast barge-in.

Opening an output stream takes hundreds of milliseconds (seconds on some
PulseAudio setups) and clips the first syllable, so the stream is opened
once and kept running, playing silence while idle.  Agent replies arrive in
network bursts; playback starts only when ``jitter_buffer_ms`` is queued (or
the reply has ended), so a late packet does not stutter.  Starts and stops
are faded over a few milliseconds so they do not pop.  ``flush()`` (the user
talks over the agent) drops everything queued and fades out within one small
callback period.

``write()`` may be called from any thread (or an asyncio loop); the callback
and writers share one short lock that is never held across I/O.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import threading
import time
from collections.abc import Mapping

import numpy as np
import pyaudio

from appliance.audio.devices import PREFERRED_OUTPUT_RATES, choose_rate, find_device
from appliance.audio.own_sound import OwnSound, quiet_from
from appliance.audio.resample import AGENT_RATE, Resampler
from appliance.audio.stream import (
    DEFAULT_RETRY_INITIAL,
    DEFAULT_RETRY_MAX,
    StateCallback,
    StreamState,
    SupervisedStream,
)
from appliance.audio.watchdog import StreamLimits

__all__ = ["AudioPlayback", "PlaybackState", "StreamState"]

DEFAULT_JITTER_BUFFER_MS = 60
# The callback period bounds how soon a reply starts and a flush (barge-in) is heard, and
# costs CPU per callback even while silent: a bare output stream at 24 kHz costs 0.80
# CPU-s per minute at 10 ms, 0.40 at 20 ms (scripts/bench.py's playback floor). Measured
# on the PulseAudio test stack, agent mode: 20 ms saves ~0.3 CPU-s per audio minute
# against 10 ms, a reply starts within ~20 ms (p99; 10 ms blocks: ~10 ms) and a flush
# is heard within one block. 10 (audio.output_block_ms) when the last ms matter more.
DEFAULT_PLAYBACK_BLOCK_MS = 20
DEFAULT_FADE_MS = 5
# Most audio that may be queued (a long reply arriving faster than real time).
DEFAULT_MAX_BUFFER_SECONDS = 300.0


class PlaybackState(enum.Enum):
    IDLE = "idle"  # nothing queued; the stream plays silence
    BUFFERING = "buffering"  # collecting the jitter buffer before (re)starting
    PLAYING = "playing"


class BufferFull(RuntimeError):
    """More audio was written than ``max_buffer_seconds`` can hold."""


class AudioPlayback(SupervisedStream):
    """Persistent PortAudio output stream playing PCM16 mono written at ``input_rate``.

    ``device``: name substring (None = default output).  ``rate``: device
    rate (None = ``input_rate`` if supported, else the first of
    ``preferred_rates``, else the device default); audio is resampled when it
    differs from ``input_rate``.  ``limits``: how long a (re)opened stream may
    take to start and then go quiet (:class:`StreamLimits`); a lost stream
    keeps its queue and plays it when it is back.
    """

    kind = "playback"

    def __init__(
        self,
        device: str | None = None,
        rate: int | None = None,
        *,
        input_rate: int = AGENT_RATE,
        jitter_buffer_ms: int = DEFAULT_JITTER_BUFFER_MS,
        block_ms: int = DEFAULT_PLAYBACK_BLOCK_MS,
        fade_ms: float = DEFAULT_FADE_MS,
        volume: float = 1.0,
        max_buffer_seconds: float = DEFAULT_MAX_BUFFER_SECONDS,
        preferred_rates: tuple[int, ...] = PREFERRED_OUTPUT_RATES,
        on_state: StateCallback | None = None,
        limits: StreamLimits | None = None,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        super().__init__(block_ms, on_state, limits, retry_initial, retry_max)
        self.device_name = device
        self.requested_rate = rate
        self.input_rate = input_rate
        self.jitter_buffer_ms = jitter_buffer_ms
        self.fade_ms = fade_ms
        self.max_buffer_seconds = max_buffer_seconds
        self.preferred_rates = preferred_rates
        self.volume = volume
        self.rate = 0
        self.underruns = 0  # reply audio ran out before the reply ended
        self.device_underflows = 0  # PortAudio reported an output underflow
        self.playback_state = PlaybackState.IDLE
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # keeps resampler state in write order
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._queue_own: collections.deque[bool] = collections.deque()  # per chunk: keep_out
        self._took_own = False  # the last _take() played some of a keep_out chunk
        # Where to note when keep_out sounds leave the speaker (the ring silences them).
        self.own_sound: OwnSound | None = None
        self._head_offset = 0
        self._queued = 0
        self._ended = False
        self._fade_in = False
        self._fade_out: np.ndarray | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._idle_since = 0.0
        self._resampler: Resampler | None = None
        self._generation = 0  # bumped by flush(): writes racing a flush are dropped
        self._output_latency = 0.0
        self._silence = b""  # one block of silence, reused while idle

    # ------------------------------------------------------------- writers

    @property
    def volume(self) -> float:
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        self._volume = min(max(float(value), 0.0), 4.0)

    @property
    def idle(self) -> bool:
        return self.playback_state == PlaybackState.IDLE

    @property
    def playing(self) -> bool:
        return self.playback_state == PlaybackState.PLAYING

    @property
    def queued_seconds(self) -> float:
        return self._queued / self.rate if self.rate else 0.0

    @property
    def output_latency(self) -> float:
        """Seconds from a callback handing over a block to the device sounding it (PortAudio's)."""
        return self._output_latency

    @property
    def idle_since(self) -> float:
        """time.monotonic() when the queue last ran dry (the device still sounds its latency)."""
        return self._idle_since

    def quiet(self, tail: float = 0.0, now: float | None = None) -> bool:
        """Nothing is queued and the device has sounded out what it held (its output
        latency) plus ``tail`` seconds: the speaker can no longer reach the microphone."""
        if not self._idle.is_set():
            return False
        at = time.monotonic() if now is None else now
        return at >= quiet_from(self._idle_since, self._output_latency, tail)

    def write_own_sound(self, pcm16: bytes | bytearray | memoryview | np.ndarray) -> None:
        """Queue a sound of the device's own (an earcon): see ``write(keep_out=True)``."""
        self.write(pcm16, keep_out=True)

    def write(
        self, pcm16: bytes | bytearray | memoryview | np.ndarray, *, keep_out: bool = False
    ) -> None:
        """Queue PCM16 little-endian mono audio at ``input_rate`` (any thread).

        ``keep_out``: when it leaves the speaker is noted in ``own_sound``, so the
        microphone's reads silence it.
        """
        samples = (
            np.asarray(pcm16, dtype=np.int16)
            if isinstance(pcm16, np.ndarray)
            else np.frombuffer(pcm16, dtype="<i2").astype(np.int16)
        )
        if len(samples) == 0:
            return
        with self._write_lock:
            generation = self._generation
            if self._resampler is not None:
                samples = self._resampler.process(samples)
            self._enqueue(samples, generation, keep_out)

    def end_of_stream(self) -> None:
        """The reply is complete: play what is queued even if below the jitter buffer."""
        with self._write_lock:
            generation = self._generation
            if self._resampler is not None:
                self._enqueue(self._resampler.flush(), generation)
            with self._lock:
                if generation == self._generation:
                    self._ended = True
                    if self._queued == 0 and self.playback_state != PlaybackState.PLAYING:
                        self._become_idle()

    def _enqueue(self, samples: np.ndarray, generation: int, keep_out: bool = False) -> None:
        if len(samples) == 0:
            return
        with self._lock:
            if generation != self._generation:
                return  # flushed while we were resampling
            if self._queued + len(samples) > self.max_buffer_seconds * max(self.rate, 1):
                raise BufferFull(f"playback buffer over {self.max_buffer_seconds} s")
            self._queue.append(np.array(samples, dtype=np.int16, copy=True))
            self._queue_own.append(keep_out)
            self._queued += len(samples)
            self._ended = False
            self._idle.clear()
            if self.playback_state == PlaybackState.IDLE:
                self.playback_state = PlaybackState.BUFFERING

    def flush(self) -> None:
        """Barge-in: drop everything queued and fade out what is playing now."""
        with self._write_lock, self._lock:
            self._generation += 1
            if self.playback_state == PlaybackState.PLAYING:
                fade_n = max(1, int(self.rate * self.fade_ms / 1000))
                tail = self._take(fade_n).astype(np.float32)
                self._fade_out = tail * np.linspace(1.0, 0.0, len(tail), dtype=np.float32)
            self._queue.clear()
            self._queue_own.clear()
            self._queued = 0
            self._head_offset = 0
            self._ended = False
            self._become_idle()
            if self._resampler is not None:
                self._resampler.reset()

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Block until everything written has been played out of the speaker."""
        if not self._idle.wait(timeout):
            return False
        remaining = self._idle_since + self._output_latency - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        return True

    async def wait_drained_async(self, timeout: float | None = None) -> bool:
        """Asyncio form of :meth:`wait_drained` (polls; never blocks the loop)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._idle.is_set():
            if deadline is not None and loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        remaining = self._idle_since + self._output_latency - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)
        return True

    # ------------------------------------------------------------ callback

    def _become_idle(self) -> None:
        self.playback_state = PlaybackState.IDLE
        self._idle_since = time.monotonic()
        self._idle.set()

    def _take(self, n: int) -> np.ndarray:
        """Pop up to ``n`` queued samples (lock held)."""
        parts = []
        need = n
        self._took_own = False
        while need and self._queue:
            head = self._queue[0]
            if self._queue_own[0]:
                self._took_own = True
            chunk = head[self._head_offset : self._head_offset + need]
            parts.append(chunk)
            need -= len(chunk)
            self._head_offset += len(chunk)
            if self._head_offset >= len(head):
                self._queue.popleft()
                self._queue_own.popleft()
                self._head_offset = 0
        taken = n - need
        self._queued -= taken
        if not parts:
            return np.zeros(0, dtype=np.int16)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _callback(
        self,
        in_data: bytes | None,
        frame_count: int,
        time_info: Mapping[str, float] | None,  # None from FileSink's pacer
        status: int,
    ) -> tuple[bytes, int]:
        # Hot path: one short lock (never across I/O), small numpy ops, no logging.
        self.last_callback_time = time.monotonic()
        self.blocks += 1
        if status & pyaudio.paOutputUnderflow:
            self.device_underflows += 1
        if self.playback_state is PlaybackState.IDLE and self._fade_out is None:
            # Idle is most of a device's life: hand back the same silence, no numpy work.
            # (A write racing this check is played from the next block.)
            silence = self._silence
            if len(silence) != 2 * frame_count:
                silence = self._silence = bytes(2 * frame_count)
            return (silence, pyaudio.paContinue)
        out = np.zeros(frame_count, dtype=np.float32)
        fade_n = max(1, int(self.rate * self.fade_ms / 1000))
        with self._lock:
            tail = self._fade_out
            any_tail = tail is not None
            if tail is not None:
                self._fade_out = None
                out[: len(tail)] = tail[:frame_count]
            state = self.playback_state
            if state == PlaybackState.BUFFERING and (
                self._queued >= self._jitter_samples() or (self._ended and self._queued)
            ):
                state = self.playback_state = PlaybackState.PLAYING
                self._fade_in = True
            if state == PlaybackState.PLAYING:
                chunk = self._take(frame_count)
                n = len(chunk)
                if self._took_own:
                    self._note_own_sound(frame_count, time_info)
                if n == frame_count and not self._fade_in and self._volume == 1.0 and not any_tail:
                    # Mid-reply, nothing to shape: the queued samples go out as they are.
                    return (chunk.tobytes(), pyaudio.paContinue)
                out[:n] = chunk
                if self._fade_in:
                    k = min(fade_n, n)
                    out[:k] *= np.linspace(0.0, 1.0, fade_n, endpoint=False)[:k]
                    self._fade_in = False
                if n < frame_count:
                    k = min(fade_n, n)
                    if k:
                        out[n - k : n] *= np.linspace(1.0, 0.0, k)
                    if self._ended:
                        self._become_idle()
                    else:
                        self.underruns += 1
                        self.playback_state = PlaybackState.BUFFERING
        volume = self._volume
        if volume != 1.0:
            out *= volume
        np.clip(out, -32768, 32767, out=out)
        return (out.astype(np.int16).tobytes(), pyaudio.paContinue)

    def _note_own_sound(self, frame_count: int, time_info: Mapping[str, float] | None) -> None:
        """This block holds a keep_out sound: note when it leaves the speaker."""
        own = self.own_sound
        if own is None:
            return
        lead = self._output_latency
        if time_info:  # PortAudio's own estimate for this block, when it has a sane one
            dac = time_info.get("output_buffer_dac_time", 0.0) - time_info.get("current_time", 0.0)
            if lead < dac < 1.0:
                lead = dac
        start = self.last_callback_time + lead
        own.left_speaker(start, start + frame_count / self.rate)

    def _jitter_samples(self) -> int:
        return int(self.rate * self.jitter_buffer_ms / 1000)

    # ------------------------------------------------------------- stream

    def _open_stream(self, pa: pyaudio.PyAudio, first: bool) -> pyaudio.Stream:
        info = find_device(pa, self.device_name, "output")
        if first:
            preferred = (self.input_rate, *self.preferred_rates)
            self.rate = choose_rate(pa, info, "output", 1, self.requested_rate, preferred)
            if self.rate != self.input_rate:
                self._resampler = Resampler(self.input_rate, self.rate)
        else:
            choose_rate(pa, info, "output", 1, self.rate, ())
        self.device_label = f"{info.name} (#{info.index}) {self.rate} Hz"
        stream = pa.open(
            rate=self.rate,
            channels=1,
            format=pyaudio.paInt16,
            output=True,
            output_device_index=info.index,
            frames_per_buffer=max(1, self.rate * self.block_ms // 1000),
            stream_callback=self._callback,
            start=True,
        )
        self._output_latency = float(stream.get_output_latency())
        return stream

    def _on_lost(self) -> None:
        # Keep what is queued: a reopen must not cost the reply (only a barge-in
        # flushes).  The reopened stream waits for the jitter buffer again and fades in.
        with self._lock:
            self._fade_out = None
            self._fade_in = False
            if self.playback_state == PlaybackState.PLAYING:
                self.playback_state = PlaybackState.BUFFERING
