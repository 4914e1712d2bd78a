"""DTMF tones: a generator and a detector for machine-checkable test audio.

A neutral helper shared by the emulator (which "recognises" DTMF digits as
speech) and by tests (which "speak" digits into a microphone and decode what
the speaker played). Digits survive resampling, level changes, mild noise and
any chunking, so a decoded digit sequence proves that no audio was lost,
duplicated, reordered or played at the wrong rate.

Detection computes the Goertzel power at the eight DTMF frequencies on fixed
blocks (the same single-bin DFT the Goertzel recurrence computes, evaluated as
one vectorised dot product per block). A block counts as a digit only when
one low and one high tone together hold most of the block's energy, so
speech, noise, silence and stray pure tones never produce digits.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from os import PathLike

import numpy as np

LOW_FREQS_HZ = (697.0, 770.0, 852.0, 941.0)
HIGH_FREQS_HZ = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
VALID_DIGITS = frozenset("".join(KEYPAD))

#: Silence that a space in :func:`generate` stands for: long enough to end a
#: turn under the streaming API's default turn-silence settings.
TURN_PAUSE_MS = 1000

_DIGIT_FREQS = {
    KEYPAD[r][c]: (LOW_FREQS_HZ[r], HIGH_FREQS_HZ[c]) for r in range(4) for c in range(4)
}
_DIGIT_AT = {(r, c): KEYPAD[r][c] for r in range(4) for c in range(4)}


@dataclass(frozen=True)
class DigitEvent:
    """One detected key press: the digit and where it sounded in the stream."""

    digit: str
    start_s: float
    end_s: float


def generate(
    digits: str,
    rate: int,
    tone_ms: int = 120,
    gap_ms: int = 80,
    lead_ms: int = 200,
    amplitude: float = 0.5,
    trail_ms: int | None = None,
    pause_ms: int = TURN_PAUSE_MS,
) -> np.ndarray:
    """Render ``digits`` as mono int16 DTMF audio at ``rate`` Hz.

    ``digits`` holds 0-9 * # A-D; a space inserts ``pause_ms`` of silence
    (a turn boundary). ``lead_ms`` of silence comes first and ``trail_ms``
    (default: same as ``lead_ms``) last. ``amplitude`` is the peak of the two
    summed tones as a fraction of full scale. Each tone has 5 ms raised-cosine
    edges so resampling does not smear clicks into the spectrum.
    """
    if rate <= 0:
        raise ValueError("rate must be positive")
    if not 0.0 < amplitude <= 1.0:
        raise ValueError("amplitude must be in (0, 1]")
    bad = {d for d in digits.upper() if d != " " and d not in VALID_DIGITS}
    if bad:
        raise ValueError(f"not DTMF digits: {''.join(sorted(bad))!r}")
    trail_ms = lead_ms if trail_ms is None else trail_ms

    def silence(ms: float) -> np.ndarray:
        return np.zeros(round(rate * ms / 1000), dtype=np.float64)

    n_tone = round(rate * tone_ms / 1000)
    t = np.arange(n_tone) / rate
    ramp_n = min(round(rate * 0.005), n_tone // 2)
    envelope = np.ones(n_tone)
    if ramp_n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp_n) / ramp_n)
        envelope[:ramp_n] = ramp
        envelope[n_tone - ramp_n :] = ramp[::-1]

    parts: list[np.ndarray] = [silence(lead_ms)]
    previous_was_tone = False
    for d in digits.upper():
        if d == " ":
            parts.append(silence(pause_ms))
            previous_was_tone = False
            continue
        if previous_was_tone:
            parts.append(silence(gap_ms))
        low, high = _DIGIT_FREQS[d]
        tone = (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t)) * 0.5
        parts.append(tone * envelope)
        previous_was_tone = True
    parts.append(silence(trail_ms))
    signal = np.concatenate(parts) * amplitude * 32767.0
    return np.clip(np.round(signal), -32768, 32767).astype(np.int16)


def write_wav(path: str | PathLike[str], samples: np.ndarray, rate: int) -> None:
    """Write int16 samples (shape (n,) mono or (n, channels)) as a PCM16 WAV file."""
    data = np.asarray(samples, dtype=np.int16)
    channels = 1 if data.ndim == 1 else data.shape[1]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())


def read_wav(path: str | PathLike[str]) -> tuple[np.ndarray, int]:
    """Read a PCM16 WAV file; returns (samples, rate), stereo as shape (n, channels)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM WAV is supported")
        rate = w.getframerate()
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    if channels > 1:
        data = data.reshape(-1, channels)
    return data, rate


class DtmfDecoder:
    """Streaming DTMF detector: feed int16 chunks, get digits as they complete.

    Blocks sit at fixed absolute sample positions, so the result does not
    depend on how the stream is chunked. A digit must hold for
    ``min_on_blocks`` consecutive blocks and ends after ``min_off_blocks``
    blocks without it.
    """

    #: Block length; 25 ms separates the closest DTMF tones (73 Hz apart).
    BLOCK_S = 0.025

    def __init__(
        self,
        rate: int,
        min_level_dbfs: float = -50.0,
        min_tone_fraction: float = 0.7,
        max_twist_db: float = 9.0,
        min_on_blocks: int = 3,
        min_off_blocks: int = 2,
    ) -> None:
        if rate < 4000:
            raise ValueError("rate must be at least 4000 Hz to carry DTMF tones")
        self.rate = rate
        self.block = max(16, round(rate * self.BLOCK_S))
        self.hop = self.block // 2
        self.min_mean_square = (10 ** (min_level_dbfs / 20) * 32768.0) ** 2 / 2
        self.min_tone_fraction = min_tone_fraction
        self.max_twist = 10 ** (max_twist_db / 10)
        self.min_on_blocks = min_on_blocks
        self.min_off_blocks = min_off_blocks
        n = np.arange(self.block)
        freqs = np.array(LOW_FREQS_HZ + HIGH_FREQS_HZ)
        phase = 2 * np.pi * np.outer(n, freqs) / rate
        self._basis = np.concatenate([np.cos(phase), np.sin(phase)], axis=1)
        self._buffer = np.zeros(0, dtype=np.float64)
        self._buffer_start = 0  # absolute sample index of _buffer[0]
        self._next_block = 0  # absolute index of the next block to analyse
        self._run_digit: str | None = None
        self._run_start = 0  # absolute block number
        self._run_last = 0
        self._run_len = 0
        self._off = 0
        self.samples_seen = 0

    @property
    def active_digit(self) -> str | None:
        """The digit sounding right now (confirmed), or None."""
        if self._run_digit is not None and self._run_len >= self.min_on_blocks:
            return self._run_digit
        return None

    def feed(self, samples: np.ndarray) -> list[DigitEvent]:
        """Add a chunk of mono int16 samples; return digits that ended within it."""
        chunk = np.asarray(samples).reshape(-1).astype(np.float64)
        self.samples_seen += chunk.size
        self._buffer = np.concatenate([self._buffer, chunk]) if self._buffer.size else chunk
        first = self._next_block * self.hop - self._buffer_start
        available = self._buffer.size - first - self.block
        events: list[DigitEvent] = []
        if available >= 0:
            count = available // self.hop + 1
            view = np.lib.stride_tricks.sliding_window_view(self._buffer[first:], self.block)
            blocks = view[:: self.hop][:count]
            for offset, digit in enumerate(self._classify(blocks)):
                self._step(self._next_block + offset, digit, events)
            self._next_block += count
        keep_from = self._next_block * self.hop - self._buffer_start
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._buffer_start += keep_from
        return events

    def flush(self) -> list[DigitEvent]:
        """End of stream: report a digit still sounding at the very end."""
        events: list[DigitEvent] = []
        if self._run_digit is not None and self._run_len >= self.min_on_blocks:
            events.append(self._event())
        self._run_digit = None
        self._run_len = 0
        return events

    def _classify(self, blocks: np.ndarray) -> list[str | None]:
        energy = np.einsum("ij,ij->i", blocks, blocks)
        proj = blocks @ self._basis
        power = proj[:, :8] ** 2 + proj[:, 8:] ** 2
        # For a sinusoid at a probed frequency 2*power/(N*energy) is ~1.
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = 2.0 * power / (self.block * energy[:, None])
        loud = energy / self.block >= self.min_mean_square
        out: list[str | None] = []
        for i in range(blocks.shape[0]):
            if not loud[i]:
                out.append(None)
                continue
            low, high = rel[i, :4], rel[i, 4:]
            r, c = int(np.argmax(low)), int(np.argmax(high))
            lo, hi = low[r], high[c]
            if lo + hi < self.min_tone_fraction:
                out.append(None)
                continue
            if lo > hi * self.max_twist or hi > lo * self.max_twist:
                out.append(None)
                continue
            if np.partition(low, -2)[-2] > lo * 0.25 or np.partition(high, -2)[-2] > hi * 0.25:
                out.append(None)
                continue
            out.append(_DIGIT_AT[(r, c)])
        return out

    def _step(self, block_no: int, digit: str | None, events: list[DigitEvent]) -> None:
        if digit is not None and digit == self._run_digit:
            self._run_len += 1
            self._run_last = block_no
            self._off = 0
            return
        if self._run_digit is not None:
            self._off += 1
            if digit is None and self._off < self.min_off_blocks:
                return
            if self._run_len >= self.min_on_blocks:
                events.append(self._event())
            self._run_digit = None
            self._run_len = 0
        if digit is not None:
            self._run_digit = digit
            self._run_start = block_no
            self._run_last = block_no
            self._run_len = 1
            self._off = 0

    def _event(self) -> DigitEvent:
        # A block detects the tone once the tone dominates it, so the edges
        # are estimated from block centres, half a hop either side.
        centre = self.block / 2
        start = self._run_start * self.hop + centre - self.hop / 2
        end = self._run_last * self.hop + centre + self.hop / 2
        return DigitEvent(self._run_digit or "", max(0.0, start / self.rate), end / self.rate)


def decode(samples: np.ndarray, rate: int) -> list[DigitEvent]:
    """Decode every DTMF digit in a mono int16 signal (stereo: first channel)."""
    data = np.asarray(samples)
    if data.ndim == 2:
        data = data[:, 0]
    decoder = DtmfDecoder(rate)
    return decoder.feed(data) + decoder.flush()


def decode_digits(samples: np.ndarray, rate: int) -> str:
    """The decoded digits as one string, for terse assertions."""
    return "".join(e.digit for e in decode(samples, rate))
