"""Signal helpers for the audio tests: test signals, alignment, levels."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def chirp(rate: int, seconds: float, f0: float = 200.0, f1: float = 3500.0, amplitude: float = 0.3):
    """A linear sweep: its autocorrelation has one sharp peak, so alignment is unambiguous."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))
    return np.round(amplitude * 32767 * np.sin(phase)).astype(np.int16)


def silence(rate: int, seconds: float) -> np.ndarray:
    return np.zeros(int(rate * seconds), dtype=np.int16)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if len(x) else 0.0


def align(haystack: np.ndarray, needle: np.ndarray) -> tuple[int, float]:
    """Offset of ``needle`` inside ``haystack`` and the normalised correlation there (FFT)."""
    h = haystack.astype(np.float64)
    n = needle.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(h) + len(n))))
    corr = np.fft.irfft(np.fft.rfft(h, size) * np.conj(np.fft.rfft(n, size)), size)[: len(h)]
    offset = int(np.argmax(corr[: max(1, len(h) - len(n) + 1)]))
    segment = h[offset : offset + len(n)]
    denom = np.sqrt(np.sum(segment**2) * np.sum(n**2))
    return offset, float(np.dot(segment, n) / denom) if denom else 0.0


def onset(x: np.ndarray, threshold: int = 1000) -> int | None:
    """Index of the first sample whose magnitude exceeds ``threshold``."""
    hits = np.flatnonzero(np.abs(x.astype(np.int32)) > threshold)
    return int(hits[0]) if len(hits) else None


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True
