"""Capture through the real PortAudio -> ALSA -> PulseAudio path into the ring buffer."""

import logging
import time

import numpy as np
import pytest

from appliance import dtmf
from appliance.audio.capture import AudioCapture, StreamState
from appliance.audio.resample import Resampler, resample_once
from tests.audio.signals import align, chirp, onset, rms, silence, tone, wait_for
from tests.fixtures.pulse import on_each_server

pytestmark = pytest.mark.audio
log = logging.getLogger(__name__)

RATE = 48000


@pytest.fixture(scope="module")
def capture(pulse_server):
    cap = AudioCapture(rate=RATE, block_ms=20, history_seconds=10.0)
    cap.start()
    assert wait_for(lambda: cap.state == StreamState.RUNNING, 10.0), cap.state_detail
    yield cap
    cap.stop()
    # A slow first block (2.3 s on PulseAudio with default arguments) is a start, not a loss.
    assert cap.losses == 0, f"microphone lost {cap.losses} time(s)"


def speak(pulse_server, samples: np.ndarray, rate: int = RATE) -> None:
    proc = pulse_server.play_into_mic(samples, rate)
    assert proc.wait(timeout=30) == 0


@on_each_server
def test_audio_spoken_into_the_mic_arrives_intact_and_resamples_without_delay(
    pulse_server, capture
):
    source = np.concatenate([dtmf.generate("159#", RATE), chirp(RATE, 0.5), silence(RATE, 0.2)])
    # Half a second of margin: the null sink may deliver the start of the sound
    # at ring indices a little before the play command returns.
    start = max(0, capture.ring.write_index - RATE // 2)
    speak(pulse_server, source)
    assert capture.ring.wait_until(capture.ring.write_index + RATE // 2, timeout=5)
    result = capture.ring.read(start, capture.ring.write_index - start)
    assert result.lost == 0 and result.discontinuities == ()
    heard48 = result.samples

    offset48, corr48 = align(heard48, source)
    # Every sample arrived, unchanged, in order (the test mic runs at 48 kHz).
    np.testing.assert_array_equal(heard48[offset48 : offset48 + len(source)], source)

    resampler = Resampler(RATE, 16000)
    block = RATE // 50
    heard16 = np.concatenate(
        [resampler.process(heard48[i : i + block]) for i in range(0, len(heard48), block)]
        + [resampler.flush()]
    )
    # Chunked streaming equals one-shot resampling of the same capture: no seams.
    one_shot = resample_once(heard48, RATE, 16000)
    assert len(heard16) == len(one_shot)
    assert np.max(np.abs(heard16.astype(np.int32) - one_shot)) <= 2
    # And no delay: the source lands at offset48 / 3.  (Pad the source by the
    # sub-sample remainder so both are sampled at the same phase.)
    padded = np.concatenate([np.zeros(offset48 % 3, dtype=np.int16), source])
    source16 = resample_once(padded, RATE, 16000)
    offset16, corr16 = align(heard16, source16)
    assert corr16 > 0.999
    assert offset16 == offset48 // 3
    assert dtmf.decode_digits(heard16, 16000) == "159#"
    log.info("capture: correlation 48k %.4f 16k %.4f, offset %d", corr48, corr16, offset48)


@on_each_server
def test_preroll_holds_the_sound_that_started_before_the_press(pulse_server, capture):
    ring = capture.ring
    sound = np.concatenate([tone(440.0, RATE, 1.0), silence(RATE, 0.1)])
    before = ring.write_index
    speaking_since = time.monotonic()
    proc = pulse_server.play_into_mic(sound, RATE)
    assert proc.wait(timeout=10) == 0
    # The user started speaking and pressed the button 0.3 s later.
    press_time = speaking_since + 0.3
    assert ring.wait_until(ring.index_at(press_time) + RATE // 10, timeout=5)
    press_index = ring.index_at(press_time)
    start = ring.preroll_index(press_time, preroll_seconds=0.5)
    assert before - RATE < start < press_index

    preroll = ring.read(start, press_index - start).samples
    assert len(preroll) == pytest.approx(0.5 * RATE, abs=RATE * 0.03)
    first_sound = onset(preroll)
    assert first_sound is not None, "pre-roll holds no sound"
    assert first_sound > RATE * 0.05, "sound already present at the pre-roll start"
    assert rms(preroll[:first_sound]) < 50 and rms(preroll[-RATE // 10 :]) > 5000
    heard_before_press_ms = (len(preroll) - first_sound) * 1000 / RATE
    log.info("pre-roll: the sound began %.0f ms before the press", heard_before_press_ms)


@on_each_server
def test_level_meter_reads_the_level_of_a_known_tone(pulse_server, capture):
    proc = pulse_server.play_into_mic(tone(1000.0, RATE, 1.0, amplitude=0.3), RATE)
    assert wait_for(lambda: capture.level_dbfs(0.02).peak_dbfs > -20, 5.0)
    time.sleep(0.3)
    level = capture.level_dbfs(0.2)
    proc.wait(timeout=10)
    # 0.3 of full scale: peak -10.5 dBFS, RMS 3 dB lower.
    assert level.peak_dbfs == pytest.approx(-10.5, abs=1.0)
    assert level.rms_dbfs == pytest.approx(-13.5, abs=1.0)
    assert capture.seconds_since_last_block() < 1.0


def test_live_reader_that_falls_behind_learns_the_exact_loss(pulse_server):
    cap = AudioCapture(rate=16000, block_ms=20, history_seconds=0.5)
    with cap:
        assert wait_for(lambda: cap.blocks > 0, 10.0)
        reader = cap.ring.reader()
        start = reader.position
        assert wait_for(lambda: cap.ring.write_index > start + 16000, 5.0)  # 1 s > history
        result = reader.read(10 * 16000)
    assert result.lost > 0
    assert result.start == start + result.lost
    assert reader.position == result.end == result.start + len(result.samples)
    assert len(result.samples) <= cap.ring.capacity
    assert result.end - start == result.lost + len(result.samples)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_minutes_of_capture_without_overflow(pulse_server):
    seconds = 120.0
    cap = AudioCapture(rate=RATE, block_ms=20, history_seconds=10.0)
    with cap:
        assert wait_for(lambda: cap.blocks > 0, 10.0)
        index0, t0 = cap.ring.write_index, time.monotonic()
        time.sleep(seconds)
        samples, elapsed = cap.ring.write_index - index0, time.monotonic() - t0
        state, overflows, gaps = cap.state, cap.overflows, cap.ring.discontinuities
    log.info("2-min capture: %d samples in %.2f s, overflows %d", samples, elapsed, overflows)
    assert overflows == 0
    assert gaps == ()
    assert state == StreamState.RUNNING
    assert samples == pytest.approx(elapsed * RATE, rel=0.01)
