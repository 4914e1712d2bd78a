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

import threading
import time
import wave
from pathlib import Path

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
from appliance.audio.resample import AGENT_RATE, Resampler, resample_once
from appliance.audio.ring import DEFAULT_HISTORY_SECONDS, RingBuffer
from appliance.audio.stream import StateCallback, StreamState

# A paced thread that wakes this late has fallen behind (machine overloaded).
_MAX_CATCH_UP_BLOCKS = 50


def read_wav_mono(path: str | Path, channel: int = 0) -> tuple[np.ndarray, int]:
    """PCM16 WAV -> (int16 mono samples of ``channel``, rate)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported")
        channels, rate = w.getnchannels(), w.getframerate()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    if channel >= channels:
        raise ValueError(f"{path}: has {channels} channel(s), channel {channel} requested")
    return (data[channel::channels].copy() if channels > 1 else data), rate


class _Pacer:
    """Calls ``tick()`` every ``period`` seconds on monotonic time, from its own thread."""

    def __init__(self, name: str, period: float, tick) -> None:
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
            behind = int((time.monotonic() - next_time) / period)
            if behind > _MAX_CATCH_UP_BLOCKS:  # do not burst minutes of audio after a stall
                next_time += behind * period
            self._tick(next_time)
            next_time += period


class FileSource(RingSource):
    """A WAV file played into a ring buffer in real time, block by block.

    ``rate``: None keeps the file's rate, else the file is resampled once.
    ``lead_silence_seconds``/``trail_silence_seconds`` pad the file;
    ``loop`` repeats file and padding.  After the last pass the source keeps
    delivering silence, like a microphone in a quiet room, and sets
    ``finished``.
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
    ) -> None:
        super().__init__(on_state)
        samples, file_rate = read_wav_mono(path, channel)
        self.rate = int(rate or file_rate)
        samples = resample_once(samples, file_rate, self.rate)
        lead = np.zeros(round(lead_silence_seconds * self.rate), dtype=np.int16)
        trail = np.zeros(round(trail_silence_seconds * self.rate), dtype=np.int16)
        self.path = Path(path)
        self.program = np.concatenate([lead, samples, trail])
        self.loop = loop
        self.block_ms = block_ms
        self.block = max(1, self.rate * block_ms // 1000)
        self.ring = RingBuffer(self.rate, history_seconds)
        self.finished = threading.Event()
        self.device_label = f"file {self.path.name} {self.rate} Hz"
        self._position = 0
        self._silence = np.zeros(self.block, dtype=np.int16)
        self._pacer: _Pacer | None = None

    def _tick(self, block_end_time: float) -> None:
        n, program = self.block, self.program
        if self._position >= len(program) and self.loop and len(program):
            self._position = 0
        if self._position < len(program):
            chunk = program[self._position : self._position + n]
            self._position += len(chunk)
            if len(chunk) < n:
                chunk = np.concatenate([chunk, self._silence[: n - len(chunk)]])
        else:
            chunk = self._silence
        if self._position >= len(program) and not self.loop:
            self.finished.set()
        self.ring.write(chunk, block_end_time - n / self.rate)
        self.blocks += 1
        self.last_callback_time = time.monotonic()

    def start(self) -> None:
        if self._pacer is not None:
            return
        self._pacer = _Pacer("audio-file-source", self.block / self.rate, self._tick)
        self._pacer.start()
        self._set_state(StreamState.RUNNING, self.device_label)

    def stop(self) -> None:
        if self._pacer is not None:
            self._pacer.stop()
            self._pacer = None
        self._set_state(StreamState.STOPPED)

    def __enter__(self):
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
        self._file_pacer: _Pacer | None = None
        self.frames_written = 0

    def _tick(self, _block_end_time: float) -> None:
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
        self._file_pacer = _Pacer("audio-file-sink", period, self._tick)
        self._file_pacer.start()
        self._set_state(StreamState.RUNNING, self.device_label)

    def stop(self) -> None:
        if self._file_pacer is not None:
            self._file_pacer.stop()
            self._file_pacer = None
        if self._wav is not None:
            self._wav.close()
            self._wav = None
        self._set_state(StreamState.STOPPED)
