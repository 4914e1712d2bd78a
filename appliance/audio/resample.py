"""Streaming int16 resampling from the capture rate to what a consumer needs.

Speech-to-text wants 16 kHz and the voice agent 24 kHz, while USB microphones
usually only do 44.1 or 48 kHz.  Each consumer owns one :class:`Resampler`
and feeds it consecutive chunks: the filter state carries across chunk
boundaries (no clicks), aliasing above the target Nyquist is removed by
libsoxr's band-limited filter, and the output is time-aligned with the input
(soxr drops its own filter delay; it only makes output *available* a little
later, see :attr:`Resampler.delay_samples`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import soxr

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

STT_RATE = 16_000
AGENT_RATE = 24_000
# soxr "HQ": 20-bit precision, steep anti-alias filter; ample for speech and
# cheap enough for a Pi (measured in tests/audio/test_resample.py).
DEFAULT_QUALITY: Quality = "HQ"

_EMPTY = np.zeros(0, dtype=np.int16)


class Resampler:
    """Stateful int16 mono resampler; a no-op when the rates match."""

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = DEFAULT_QUALITY) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError("rates must be positive")
        self.in_rate = int(in_rate)
        self.out_rate = int(out_rate)
        self.quality = quality
        self._stream: soxr.ResampleStream | None = None
        self.samples_in = 0
        self.samples_out = 0
        self.reset()

    @property
    def is_identity(self) -> bool:
        return self.in_rate == self.out_rate

    @property
    def delay_samples(self) -> float:
        """Output samples held back inside the filter (0 for the identity)."""
        return 0.0 if self._stream is None else float(self._stream.delay())

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk; may return fewer (or more) samples than the ratio says."""
        samples = np.asarray(samples, dtype=np.int16)
        self.samples_in += len(samples)
        if self._stream is None:
            out = samples
        else:
            out = self._stream.resample_chunk(np.ascontiguousarray(samples))
        self.samples_out += len(out)
        return out

    def flush(self) -> np.ndarray:
        """Return what the filter still holds (end of stream) and start afresh."""
        out = _EMPTY if self._stream is None else self._stream.resample_chunk(_EMPTY, last=True)
        self.samples_out += len(out)
        self.reset()
        return out

    def reset(self) -> None:
        """Forget all state (e.g. after a discontinuity or a playback flush)."""
        if self.is_identity:
            self._stream = None
        else:
            self._stream = soxr.ResampleStream(
                self.in_rate, self.out_rate, 1, dtype="int16", quality=self.quality
            )

    def input_samples_for(self, output_samples: int) -> int:
        """How many input samples correspond to ``output_samples`` of output (rounded down).

        Lets a session turn "the server has N samples at 16 kHz" back into a
        ring buffer index.
        """
        return output_samples * self.in_rate // self.out_rate


def resample_once(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """One-shot resampling of a whole int16 buffer (files, earcons)."""
    if in_rate == out_rate:
        return np.asarray(samples, dtype=np.int16)
    out: np.ndarray = soxr.resample(
        np.asarray(samples, dtype=np.int16), in_rate, out_rate, DEFAULT_QUALITY
    )
    return out
