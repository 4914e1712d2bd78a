"""DTMF generator and detector: round trips, robustness, and no invented digits."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soxr

from appliance import dtmf

RATES = [8000, 16000, 24000, 44100, 48000]
ALL_KEYS = "0123456789*#ABCD"


@pytest.mark.parametrize("rate", RATES)
def test_every_key_round_trips_at_every_rate(rate):
    audio = dtmf.generate(ALL_KEYS, rate)
    assert audio.dtype == np.int16
    assert dtmf.decode_digits(audio, rate) == ALL_KEYS


@pytest.mark.parametrize("rate", RATES)
def test_repeated_digits_stay_separate(rate):
    audio = dtmf.generate("1122 00", rate, gap_ms=50)
    assert dtmf.decode_digits(audio, rate) == "112200"


def test_digit_times_match_the_generated_layout():
    events = dtmf.decode(dtmf.generate("12", 16000, tone_ms=120, gap_ms=80, lead_ms=200), 16000)
    assert [e.digit for e in events] == ["1", "2"]
    for event, true_start in zip(events, [0.2, 0.4], strict=True):
        assert event.start_s == pytest.approx(true_start, abs=0.02)
        assert event.end_s == pytest.approx(true_start + 0.12, abs=0.02)


def test_space_inserts_a_turn_pause():
    rate = 16000
    plain = dtmf.generate("12", rate)
    paused = dtmf.generate("1 2", rate)
    extra = paused.size - plain.size
    assert extra == rate * (dtmf.TURN_PAUSE_MS - 80) // 1000
    events = dtmf.decode(paused, rate)
    assert events[1].start_s - events[0].end_s > 0.9


@pytest.mark.parametrize(
    ("src", "dst"), [(48000, 16000), (44100, 24000), (16000, 8000), (8000, 48000), (24000, 44100)]
)
def test_survives_resampling(src, dst):
    audio = dtmf.generate("8675309#", src)
    resampled = soxr.resample(audio, src, dst)
    assert dtmf.decode_digits(resampled, dst) == "8675309#"


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_survives_low_level_noise(rate):
    rng = np.random.default_rng(7)
    audio = dtmf.generate("159*", rate, amplitude=0.3).astype(np.float64)
    noisy = audio + rng.normal(0, 600, audio.size)  # about 20 dB below the tones
    assert dtmf.decode_digits(noisy.astype(np.int16), rate) == "159*"


def test_survives_quiet_tones_and_short_tones():
    rate = 16000
    quiet = dtmf.generate("42", rate, amplitude=0.02)
    assert dtmf.decode_digits(quiet, rate) == "42"
    short = dtmf.generate("4242", rate, tone_ms=60, gap_ms=50)
    assert dtmf.decode_digits(short, rate) == "4242"


@pytest.mark.parametrize("chunk_ms", [10, 50, 100, 137, 1000])
def test_streaming_result_does_not_depend_on_chunking(chunk_ms):
    rate = 24000
    audio = dtmf.generate("0123 456789", rate)
    decoder = dtmf.DtmfDecoder(rate)
    step = rate * chunk_ms // 1000
    events: list[dtmf.DigitEvent] = []
    for i in range(0, audio.size, step):
        events += decoder.feed(audio[i : i + step])
    events += decoder.flush()
    assert events == dtmf.decode(audio, rate)
    assert "".join(e.digit for e in events) == "0123456789"


def test_streaming_decoder_reports_a_digit_soon_after_it_ends():
    rate = 16000
    audio = dtmf.generate("7", rate, lead_ms=100, trail_ms=0)
    decoder = dtmf.DtmfDecoder(rate)
    assert decoder.feed(audio) == []
    assert decoder.active_digit == "7"
    events = decoder.feed(np.zeros(rate // 10, dtype=np.int16))
    assert [e.digit for e in events] == ["7"]
    assert decoder.active_digit is None
    assert decoder.flush() == []


def test_flush_reports_a_tone_cut_off_by_the_end_of_stream():
    rate = 8000
    audio = dtmf.generate("9", rate, trail_ms=0)
    decoder = dtmf.DtmfDecoder(rate)
    assert decoder.feed(audio) == []
    assert [e.digit for e in decoder.flush()] == ["9"]


@pytest.mark.parametrize("rate", RATES)
def test_silence_and_white_noise_give_nothing(rate):
    rng = np.random.default_rng(3)
    assert dtmf.decode(np.zeros(rate * 2, dtype=np.int16), rate) == []
    for level in (30, 1000, 10000):
        noise = rng.normal(0, level, rate * 2).clip(-32768, 32767).astype(np.int16)
        assert dtmf.decode(noise, rate) == []


@pytest.mark.parametrize(
    "freqs", [(1000.0,), (697.0,), (1209.0,), (697.0, 770.0), (1209.0, 1336.0), (440.0, 1500.0)]
)
def test_pure_tones_and_same_group_pairs_give_nothing(freqs):
    rate = 16000
    t = np.arange(rate) / rate
    signal = sum(np.sin(2 * np.pi * f * t) for f in freqs) * 8000
    assert dtmf.decode(signal.astype(np.int16), rate) == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_speech_gives_nothing(tmp_path):
    path = tmp_path / "speech.wav"
    text = "one two three, four five six. The quick brown fox jumps over the lazy dog."
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, timeout=30)
    samples, rate = dtmf.read_wav(path)
    assert dtmf.decode(samples, rate) == []
    assert dtmf.decode(soxr.resample(samples, rate, 48000), 48000) == []


def test_wav_round_trip_mono_and_stereo(tmp_path):
    rate = 44100
    audio = dtmf.generate("3#", rate)
    dtmf.write_wav(tmp_path / "mono.wav", audio, rate)
    samples, got_rate = dtmf.read_wav(tmp_path / "mono.wav")
    assert got_rate == rate
    assert np.array_equal(samples, audio)
    stereo = np.stack([audio, np.zeros_like(audio)], axis=1)
    dtmf.write_wav(tmp_path / "stereo.wav", stereo, rate)
    samples, _ = dtmf.read_wav(tmp_path / "stereo.wav")
    assert samples.shape == (audio.size, 2)
    assert dtmf.decode_digits(samples, rate) == "3#"


def test_rejects_non_dtmf_characters():
    with pytest.raises(ValueError, match="not DTMF"):
        dtmf.generate("12x", 16000)
