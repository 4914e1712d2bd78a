"""The loopback check's analysis: heard or not, latency, echo, clipping, noise floor."""

from __future__ import annotations

import numpy as np

from appliance.audio import loopback
from appliance.audio.loopback import FULL_DUPLEX_MAX_ECHO_DBFS, PROBE_DIGITS, analyse

RATE = 16_000
QUIET = RATE // 2  # samples of room before the probe is written


def room(seconds: float, noise_dbfs: float, seed: int = 1) -> np.ndarray:
    """Gaussian noise at ``noise_dbfs`` RMS, as float samples."""
    rms = 32768 * 10 ** (noise_dbfs / 20)
    return np.random.default_rng(seed).normal(0.0, rms, round(seconds * RATE))


def recording(delay_s: float, gain_db: float, noise_dbfs: float = -75.0) -> np.ndarray:
    """The room, with the probe written at QUIET and heard ``delay_s`` later at ``gain_db``."""
    out = room(3.0, noise_dbfs)
    at = QUIET + round(delay_s * RATE)
    probe = loopback.probe_signal(RATE) * 10 ** (gain_db / 20)
    out[at : at + len(probe)] += probe
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def test_a_heard_probe_gives_its_delay_as_the_latency() -> None:
    result = analyse(recording(0.137, -12.0), RATE, QUIET)
    assert result.heard and result.decoded == PROBE_DIGITS
    assert result.latency_s is not None
    assert abs(result.latency_s - 0.137) <= 1 / RATE


def test_the_echo_level_is_the_probe_as_heard() -> None:
    played = loopback.dbfs(loopback.probe_signal(RATE))
    result = analyse(recording(0.05, -20.0), RATE, QUIET)
    assert abs(result.echo_dbfs - (played - 20.0)) < 0.5


def test_the_noise_floor_is_the_quiet_before_the_probe() -> None:
    result = analyse(recording(0.05, -12.0, noise_dbfs=-60.0), RATE, QUIET)
    assert abs(result.noise_floor_dbfs - -60.0) < 0.5


def test_a_silent_microphone_has_not_heard_the_speaker() -> None:
    result = analyse(np.zeros(3 * RATE, dtype=np.int16), RATE, QUIET)
    assert not result.heard
    assert result.decoded == "" and result.latency_s is None
    assert result.recommendation == "half_duplex"


def test_noise_alone_is_not_heard_as_the_probe() -> None:
    noise = np.round(room(3.0, -20.0)).astype(np.int16)
    assert not analyse(noise, RATE, QUIET).heard


def test_a_probe_missing_a_digit_is_not_heard() -> None:
    audio = recording(0.05, -12.0)
    tone = (loopback.PROBE_TONE_MS + loopback.PROBE_GAP_MS) * RATE // 1000
    first = QUIET + round(0.05 * RATE)
    audio[first : first + tone] = 0
    result = analyse(audio, RATE, QUIET)
    assert result.decoded == PROBE_DIGITS[1:]
    assert not result.heard


def test_a_probe_heard_before_it_was_written_is_not_counted() -> None:
    """Only what follows the write counts: a stray earlier sequence is not the probe."""
    result = analyse(recording(-0.45, -12.0), RATE, QUIET)
    assert not result.heard


def test_clipped_samples_are_counted_at_both_ends() -> None:
    audio = recording(0.05, -12.0)
    audio[100:103] = 32767
    audio[200:204] = -32768
    assert analyse(audio, RATE, QUIET).clipped_samples == 7


def test_a_loud_echo_without_cancellation_recommends_half_duplex() -> None:
    result = analyse(recording(0.05, -12.0), RATE, QUIET)
    assert result.echo_dbfs > FULL_DUPLEX_MAX_ECHO_DBFS
    assert result.recommendation == "half_duplex"


def test_a_canceller_that_removes_the_echo_recommends_full_duplex() -> None:
    """The raw microphone hears the probe; the cancelled source has next to nothing of it."""
    raw = recording(0.05, -12.0)
    result = analyse(raw, RATE, QUIET, cancelled=(raw // 1000), cancelled_probe_start=QUIET)
    assert result.heard
    assert result.suppression_db is not None and abs(result.suppression_db - 60.0) < 1.0
    assert result.recommendation == "full_duplex"


def test_a_canceller_that_leaves_the_echo_recommends_half_duplex() -> None:
    raw = recording(0.05, -12.0)
    result = analyse(raw, RATE, QUIET, cancelled=(raw // 4), cancelled_probe_start=QUIET)
    assert result.cancelled_echo_dbfs is not None
    assert result.cancelled_echo_dbfs > FULL_DUPLEX_MAX_ECHO_DBFS
    assert result.recommendation == "half_duplex"


def test_the_cancelled_echo_is_measured_where_the_probe_is_heard() -> None:
    """The cancelled source's own timeline: its probe may start elsewhere in its recording."""
    raw = recording(0.2, -12.0, noise_dbfs=-90.0)
    shifted = np.concatenate([np.zeros(RATE, dtype=np.int16), raw])
    result = analyse(raw, RATE, QUIET, cancelled=shifted, cancelled_probe_start=QUIET + RATE)
    assert result.suppression_db is not None and abs(result.suppression_db) < 0.1


def test_a_faint_echo_recommends_full_duplex() -> None:
    result = analyse(recording(0.05, -48.0, noise_dbfs=-90.0), RATE, QUIET)
    assert result.heard
    assert result.echo_dbfs <= FULL_DUPLEX_MAX_ECHO_DBFS
    assert result.recommendation == "full_duplex"


def test_an_unheard_speaker_is_not_full_duplex_even_with_cancellation() -> None:
    silence = np.zeros(3 * RATE, dtype=np.int16)
    result = analyse(silence, RATE, QUIET, cancelled=silence, cancelled_probe_start=QUIET)
    assert result.recommendation == "half_duplex"
