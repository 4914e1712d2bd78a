"""Sound-card-free stand-ins: a WAV "microphone" paced in real time and a WAV "speaker".

For the demo on machines without a sound card and for tests that do not need
the audio stack.  :class:`FileSource` has the interface of
:class:`~appliance.audio.capture.AudioCapture` (start/stop, ``ring``,
``rate``, liveness, ``overflows``, ``level_dbfs``); :class:`FileSink` has the
interface of :class:`~appliance.audio.playback.AudioPlayback` (the same
jitter buffer, fades, flush and drain logic, paced by a thread instead of a
PortAudio callback).  PortAudio stays the default everywhere.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Self

import numpy as np

from appliance.audio.capture import DEFAULT_BLOCK_MS, RingSource
from appliance.audio.playback import (
    DEFAULT_FADE_MS,
    DEFAULT_JITTER_BUFFER_MS,
    DEFAULT_MAX_BUFFER_SECONDS,
    DEFAULT_PLAYBACK_BLOCK_MS,
    AudioPlayback,
    PlaybackState,
)
from appliance.audio.resample import AGENT_RATE, Resampler
from appliance.audio.ring import DEFAULT_HISTORY_SECONDS, RingBuffer
from appliance.audio.stream import StateCallback, StreamState

# A paced thread that wakes this late has fallen behind (machine overloaded).
_MAX_CATCH_UP_BLOCKS = 50
# The file source reads its WAV this much at a time as it plays.
READ_SECONDS = 0.5


class _Pacer:
    """Calls ``tick()`` every ``period`` seconds on monotonic time, from its own thread."""

    def __init__(self, name: str, period: float, tick: Callable[[float], None]) -> None:
        self._period = period
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        # A plain sleep, not Event.wait(timeout) (a lock and a condition per tick); a
        # stop is seen within one period.
        period = self._period
        next_time = time.monotonic() + period
        while True:
            time.sleep(max(0.0, next_time - time.monotonic()))
            if self._stop.is_set():
                return
            next_time = _skip_stall(next_time, period)
            self._tick(next_time)
            next_time += period


class _LoopPacer:
    """The same ticks as :class:`_Pacer`, as timers on an asyncio loop: no thread of its own.

    In the daemon the consumers of the audio run on that loop, so a tick and the
    work it makes share one wake-up instead of a thread wake-up plus a loop
    wake-up.  ``start()`` and ``stop()`` may be called from any thread; after
    ``stop()`` returns no new tick begins (one already running on the loop
    may finish: the owner's tick guards against that).
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, period: float, tick: Callable[[float], None]
    ) -> None:
        self._loop = loop
        self._period = period
        self._tick = tick
        self._next_time = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = False

    def start(self) -> None:
        self._next_time = time.monotonic() + self._period
        self._on_loop(self._schedule)

    def stop(self) -> None:
        self._stopped = True
        self._on_loop(self._cancel)

    def _on_loop(self, func: Callable[[], None]) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            func()
        else:
            try:  # noqa: SIM105 - a closed loop runs no more ticks anyway
                self._loop.call_soon_threadsafe(func)
            except RuntimeError:
                pass

    def _cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self) -> None:
        if self._stopped:
            return
        # The loop's clock is time.monotonic() (asyncio's default), so due times carry over.
        delay = self._next_time - time.monotonic()
        self._handle = self._loop.call_later(max(0.0, delay), self._run_tick)

    def _run_tick(self) -> None:
        if self._stopped:
            return
        self._next_time = _skip_stall(self._next_time, self._period)
        self._tick(self._next_time)
        self._next_time += self._period
        self._schedule()


def _skip_stall(next_time: float, period: float) -> float:
    """Skip ahead after a long stall: do not burst minutes of audio at once."""
    behind = int((time.monotonic() - next_time) / period)
    if behind > _MAX_CATCH_UP_BLOCKS:
        next_time += behind * period
    return next_time


def _make_pacer(
    name: str,
    period: float,
    tick: Callable[[float], None],
    loop: asyncio.AbstractEventLoop | None,
) -> _Pacer | _LoopPacer:
    return _Pacer(name, period, tick) if loop is None else _LoopPacer(loop, period, tick)


class _WavProgram:
    """Lead silence, the WAV (one channel, at ``rate``), trail silence, looped or not.

    Read from disk a piece at a time as it plays, so a long recording used as a
    stand-in microphone costs ``READ_SECONDS`` of memory, not its length.
    """

    def __init__(
        self, path: Path, channel: int, rate: int | None, lead: float, trail: float, loop: bool
    ) -> None:
        self.path = path
        self.channel = channel
        self._wav = wave.open(str(path), "rb")  # noqa: SIM115 - held open while playing
        if self._wav.getsampwidth() != 2:
            self._wav.close()
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        self.channels = self._wav.getnchannels()
        if channel >= self.channels:
            self._wav.close()
            raise ValueError(f"{path}: has {self.channels} channel(s), channel {channel} requested")
        self.file_rate = self._wav.getframerate()
        self.rate = int(rate or self.file_rate)
        self._resampler = Resampler(self.file_rate, self.rate)
        self.lead = round(lead * self.rate)
        self.trail = round(trail * self.rate)
        self.file_samples = round(self._wav.getnframes() * self.rate / self.file_rate)
        self.loop = loop
        self.finished = False
        self._pieces = self._generate()
        self._pending: collections.deque[np.ndarray] = collections.deque()
        self._pending_samples = 0

    @property
    def samples(self) -> int:
        """Length of one pass (lead + file + trail) at ``rate``."""
        return self.lead + self.file_samples + self.trail

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples (silence once a single pass has ended)."""
        while self._pending_samples < n and not self.finished:
            piece = next(self._pieces, None)
            if piece is None:
                self.finished = True
                break
            if len(piece):
                self._pending.append(piece)
                self._pending_samples += len(piece)
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n and self._pending:
            head = self._pending[0]
            take = min(n - filled, len(head))
            out[filled : filled + take] = head[:take]
            filled += take
            if take == len(head):
                self._pending.popleft()
            else:
                self._pending[0] = head[take:]
        self._pending_samples -= filled
        return out

    def close(self) -> None:
        self._wav.close()

    def _generate(self) -> Iterator[np.ndarray]:
        frames_per_read = max(1, round(READ_SECONDS * self.file_rate))
        while True:
            yield np.zeros(self.lead, dtype=np.int16)
            self._wav.rewind()
            self._resampler.reset()
            while True:
                raw = self._wav.readframes(frames_per_read)
                if not raw:
                    break
                data = np.frombuffer(raw, dtype="<i2")
                if self.channels > 1:
                    data = data[self.channel :: self.channels]
                yield self._resampler.process(data.astype(np.int16))
            yield self._resampler.flush()
            yield np.zeros(self.trail, dtype=np.int16)
            if not self.loop or self.samples == 0:
                return


class FileSource(RingSource):
    """A WAV file played into a ring buffer in real time, block by block.

    ``rate``: None keeps the file's rate, else the file is resampled once.
    ``lead_silence_seconds``/``trail_silence_seconds`` pad the file;
    ``loop`` repeats file and padding.  After the last pass the source keeps
    delivering silence, like a microphone in a quiet room, and sets
    ``finished``.  ``event_loop``: pace with timers on that asyncio loop instead
    of a thread of its own (start and stop from any thread).
    """

    def __init__(
        self,
        path: str | Path,
        rate: int | None = None,
        *,
        channel: int = 0,
        loop: bool = False,
        lead_silence_seconds: float = 0.0,
        trail_silence_seconds: float = 0.0,
        block_ms: int = DEFAULT_BLOCK_MS,
        history_seconds: float = DEFAULT_HISTORY_SECONDS,
        on_state: StateCallback | None = None,
        event_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(on_state)
        self.path = Path(path)
        self._event_loop = event_loop
        self._program = _WavProgram(
            self.path, channel, rate, lead_silence_seconds, trail_silence_seconds, loop
        )
        self.rate = self._program.rate
        self.loop = loop
        self.block_ms = block_ms
        self.block = max(1, self.rate * block_ms // 1000)
        self.ring = RingBuffer(self.rate, history_seconds)
        self.finished = threading.Event()
        self.device_label = f"file {self.path.name} {self.rate} Hz"
        self._pacer: _Pacer | _LoopPacer | None = None
        self._tick_lock = threading.Lock()

    @property
    def program_samples(self) -> int:
        """Samples in one pass: lead silence, the file at ``rate``, trail silence."""
        return self._program.samples

    def _tick(self, block_end_time: float) -> None:
        with self._tick_lock:  # stop() may run on another thread and close the file
            if self._pacer is None:
                return
            n = self.block
            chunk = self._program.read(n)
            if self._program.finished:
                self.finished.set()
            self.ring.write(chunk, block_end_time - n / self.rate)
            self.blocks += 1
            self.last_callback_time = time.monotonic()

    def start(self) -> None:
        if self._pacer is not None:
            return
        self._pacer = _make_pacer(
            "audio-file-source", self.block / self.rate, self._tick, self._event_loop
        )
        self._pacer.start()
        self._set_state(StreamState.RUNNING, self.device_label)

    def stop(self) -> None:
        pacer = self._pacer
        if pacer is not None:
            pacer.stop()
            with self._tick_lock:
                self._pacer = None
                self._program.close()
        self._set_state(StreamState.STOPPED)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FileSink(AudioPlayback):
    """Playback into a WAV file (or nowhere, ``path=None``) paced in real time.

    Same buffering, fades, ``flush()``, ``wait_drained()`` and state as the
    speaker; only what would have been audible is written (idle silence
    between replies is not), so the file is the replies back to back.
    """

    kind = "file-sink"

    def __init__(
        self,
        path: str | Path | None,
        rate: int | None = None,
        *,
        input_rate: int = AGENT_RATE,
        jitter_buffer_ms: int = DEFAULT_JITTER_BUFFER_MS,
        block_ms: int = DEFAULT_PLAYBACK_BLOCK_MS,
        fade_ms: float = DEFAULT_FADE_MS,
        volume: float = 1.0,
        max_buffer_seconds: float = DEFAULT_MAX_BUFFER_SECONDS,
        on_state: StateCallback | None = None,
        event_loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(
            None,
            rate,
            input_rate=input_rate,
            jitter_buffer_ms=jitter_buffer_ms,
            block_ms=block_ms,
            fade_ms=fade_ms,
            volume=volume,
            max_buffer_seconds=max_buffer_seconds,
            on_state=on_state,
        )
        self.path = Path(path) if path is not None else None
        self.rate = int(rate or input_rate)
        if self.rate != input_rate:
            self._resampler = Resampler(input_rate, self.rate)
        self.device_label = f"file {self.path.name if self.path else '(none)'} {self.rate} Hz"
        self._wav: wave.Wave_write | None = None
        self._event_loop = event_loop
        self._file_pacer: _Pacer | _LoopPacer | None = None
        self._tick_lock = threading.Lock()
        self.frames_written = 0

    def _tick(self, _block_end_time: float) -> None:
        with self._tick_lock:  # stop() may run on another thread and close the file
            if self._file_pacer is None:
                return
            was_playing = self.playback_state == PlaybackState.PLAYING
            fading_out = self._fade_out is not None
            frames = max(1, self.rate * self.block_ms // 1000)
            data, _ = self._callback(None, frames, None, 0)
            if was_playing or fading_out or self.playback_state == PlaybackState.PLAYING:
                if self._wav is not None:
                    self._wav.writeframes(data)
                self.frames_written += frames

    def start(self) -> None:
        if self._file_pacer is not None:
            return
        if self.path is not None:
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - open until stop()
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(self.rate)
        period = max(1, self.rate * self.block_ms // 1000) / self.rate
        self._file_pacer = _make_pacer("audio-file-sink", period, self._tick, self._event_loop)
        self._file_pacer.start()
        self._set_state(StreamState.RUNNING, self.device_label)

    def stop(self) -> None:
        pacer = self._file_pacer
        if pacer is not None:
            pacer.stop()
        with self._tick_lock:
            self._file_pacer = None
            if self._wav is not None:
                self._wav.close()
                self._wav = None
        self._set_state(StreamState.STOPPED)
