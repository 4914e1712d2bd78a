"""Streaming resampler quality: frequency, level, anti-aliasing, seamless chunking."""

import numpy as np
import pytest

from appliance.audio.resample import Resampler, resample_once


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def peak_frequency(x: np.ndarray, rate: int) -> float:
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * window))
    return float(np.argmax(spectrum) * rate / len(x))


def stream(resampler: Resampler, x: np.ndarray, chunk_sizes) -> np.ndarray:
    parts, pos, i = [], 0, 0
    while pos < len(x):
        n = chunk_sizes[i % len(chunk_sizes)]
        parts.append(resampler.process(x[pos : pos + n]))
        pos += n
        i += 1
    parts.append(resampler.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(48000, 16000), (48000, 24000), (44100, 16000), (16000, 24000)]
)
def test_tone_keeps_its_frequency_and_level(in_rate, out_rate):
    x = tone(997.0, in_rate, 1.0)
    y = stream(Resampler(in_rate, out_rate), x, [in_rate // 50])
    assert len(y) == pytest.approx(out_rate, abs=2)
    middle = y[out_rate // 10 : -out_rate // 10]
    assert peak_frequency(middle, out_rate) == pytest.approx(997.0, abs=2.0)
    level_change_db = 20 * np.log10(rms(middle) / rms(x[in_rate // 10 : -in_rate // 10]))
    assert abs(level_change_db) < 0.1


def test_tone_above_the_target_nyquist_is_rejected_by_60_db():
    x = tone(10_000.0, 48000, 1.0)  # above 8 kHz, the Nyquist of 16 kHz
    y = stream(Resampler(48000, 16000), x, [960])
    rejection_db = 20 * np.log10(rms(x) / max(rms(y[1600:-1600]), 1e-9))
    assert rejection_db >= 60


def test_chunked_output_equals_one_shot_output_for_any_chunking():
    rng = np.random.default_rng(7)
    speechish = tone(440.0, 48000, 2.0) // 2 + tone(2900.0, 48000, 2.0) // 3
    one_shot = resample_once(speechish, 48000, 16000)
    chunks = [int(n) for n in rng.integers(1, 2000, size=50)]
    chunked = stream(Resampler(48000, 16000), speechish, chunks)
    assert len(chunked) == len(one_shot)
    # Same samples at the same positions (no delay, no seams), up to int16 rounding.
    assert np.max(np.abs(chunked.astype(np.int32) - one_shot)) <= 2


def test_chunk_boundaries_make_no_clicks():
    x = tone(1000.0, 48000, 1.0)
    y = stream(Resampler(48000, 16000), x, [480])[800:-800].astype(np.float64)
    # The second difference of a clean 1 kHz tone at 16 kHz is bounded by its
    # amplitude * (2*pi*f/fs)^2; a seam would spike far above that.
    bound = 0.3 * 32767 * (2 * np.pi * 1000 / 16000) ** 2
    assert np.max(np.abs(np.diff(y, 2))) < bound * 1.05 + 4


def test_identity_when_rates_match_returns_input_unchanged():
    resampler = Resampler(16000, 16000)
    x = tone(440.0, 16000, 0.1)
    assert resampler.is_identity
    np.testing.assert_array_equal(resampler.process(x), x)
    assert len(resampler.flush()) == 0


def test_counts_and_index_conversion():
    resampler = Resampler(48000, 16000)
    out = stream(resampler, tone(440.0, 48000, 0.5), [960])
    assert len(out) == 8000
    assert (resampler.samples_in, resampler.samples_out) == (24000, 8000)
    assert resampler.input_samples_for(8000) == 24000
