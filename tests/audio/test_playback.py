"""Playback through PortAudio -> ALSA -> PulseAudio, heard on the speaker's monitor."""

import logging
import time

import numpy as np
import pytest

from appliance import dtmf
from appliance.audio.capture import AudioCapture
from appliance.audio.playback import AudioPlayback, PlaybackState
from appliance.audio.stream import StreamState
from tests.audio.signals import rms, silence, tone, wait_for
from tests.fixtures.pulse import on_each_server

pytestmark = pytest.mark.audio
log = logging.getLogger(__name__)

RATE = 24000
QUIET = 300  # RMS below this over 10 ms counts as silence
# Longer than the supervisor's stall timeout (1 s) and than the ~1.9 s pause a
# rewinding null sink once imposed on a freshly started output stream.
IDLE_BEFORE_REPLY_SECONDS = 2.5


@pytest.fixture(scope="module")
def playback(pulse_server):
    out = AudioPlayback(input_rate=RATE, jitter_buffer_ms=60, block_ms=10)
    out.start()
    assert wait_for(lambda: out.state == StreamState.RUNNING, 10.0), out.state_detail
    yield out
    out.stop()


class Listener:
    """Records the speaker monitor at 24 kHz while the block runs."""

    def __init__(self, pulse_server, tmp_path):
        self.path = tmp_path / "heard.raw"
        self.pulse_server = pulse_server

    def __enter__(self):
        self.proc = self.pulse_server.record_speaker(self.path, RATE)
        # parecord needs a moment to connect; wait until it writes.
        assert wait_for(lambda: self.path.exists() and self.path.stat().st_size > 0, 5.0)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.proc.terminate()
        self.proc.wait(timeout=5)

    def samples(self) -> np.ndarray:
        data = self.path.read_bytes()
        return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.int16)


def envelope(x: np.ndarray, window: int = RATE // 100) -> np.ndarray:
    n = len(x) // window
    return np.sqrt(np.mean(x[: n * window].astype(np.float64).reshape(n, window) ** 2, axis=1))


def write_in_bursts(playback, samples: np.ndarray, burst_ms: int = 100) -> None:
    step = RATE * burst_ms // 1000
    for i in range(0, len(samples), step):
        playback.write(samples[i : i + step].tobytes())


@on_each_server
def test_audio_written_at_24k_is_heard_at_the_right_pitch_and_complete(
    playback, pulse_server, tmp_path
):
    digits = "2580#"
    source = np.concatenate([tone(1000.0, RATE, 0.5), dtmf.generate(digits, RATE)])
    with Listener(pulse_server, tmp_path) as listener:
        write_in_bursts(playback, source)
        playback.end_of_stream()
        assert playback.wait_drained(timeout=10)
    heard = listener.samples()
    loud = np.flatnonzero(envelope(heard) > QUIET)
    assert len(loud), "nothing heard on the speaker"
    start = loud[0] * RATE // 100
    segment = heard[start + RATE // 20 : start + RATE * 2 // 5].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
    pitch = np.argmax(spectrum) * RATE / len(segment)
    assert pitch == pytest.approx(1000.0, abs=RATE / len(segment))
    assert rms(heard[start : start + RATE // 2]) == pytest.approx(rms(source[: RATE // 2]), rel=0.1)
    assert dtmf.decode_digits(heard, RATE) == digits
    assert playback.idle and playback.underruns == 0


def test_short_reply_waits_for_the_jitter_buffer_until_it_ends(playback):
    playback.write(tone(500.0, RATE, 0.03).tobytes())  # 30 ms < 60 ms jitter buffer
    time.sleep(0.2)
    assert playback.playback_state == PlaybackState.BUFFERING
    playback.end_of_stream()
    assert playback.wait_drained(timeout=5)
    assert playback.idle


def test_reply_that_runs_dry_counts_an_underrun_and_resumes(playback):
    before = playback.underruns
    playback.write(tone(500.0, RATE, 0.2).tobytes())
    assert wait_for(lambda: playback.playing, 5.0)
    assert wait_for(lambda: playback.playback_state == PlaybackState.BUFFERING, 5.0)
    assert playback.underruns == before + 1
    playback.write(tone(500.0, RATE, 0.2).tobytes())
    playback.end_of_stream()
    assert playback.wait_drained(timeout=5)


@on_each_server
def test_flush_silences_the_speaker_and_stale_audio_is_never_heard(
    playback, pulse_server, tmp_path
):
    # Twelve digits, about 2.4 s; barge in after ~0.7 s.
    digits = "123456789ABC"
    reply = dtmf.generate(digits, RATE, lead_ms=0)
    with Listener(pulse_server, tmp_path) as listener:
        playback.write(reply.tobytes())
        assert wait_for(lambda: playback.playing, 5.0)
        started = time.monotonic()
        time.sleep(0.7)
        flushed = time.monotonic()
        playback.flush()
        assert playback.idle
        time.sleep(1.0)
    heard = listener.samples()
    env = envelope(heard)
    loud = np.flatnonzero(env > QUIET)
    assert len(loud), "nothing heard"
    heard_seconds = (loud[-1] + 1 - loud[0]) / 100
    played_before_flush = flushed - started
    flush_ms = (heard_seconds - played_before_flush) * 1000
    log.info("flush: speaker quiet %.0f ms after flush()", flush_ms)
    # It went quiet, soon after the flush, and stayed quiet.
    assert heard_seconds < played_before_flush + 0.2
    assert np.all(env[loud[-1] + 1 :] <= QUIET)
    # What was heard is a prefix of the reply: nothing after the flush point.
    got = dtmf.decode_digits(heard, RATE)
    assert 1 <= len(got) < len(digits) and digits.startswith(got)


def test_volume_scales_the_output(playback, pulse_server, tmp_path):
    playback.volume = 0.25
    try:
        with Listener(pulse_server, tmp_path) as listener:
            playback.write(np.concatenate([tone(800.0, RATE, 0.5), silence(RATE, 0.05)]).tobytes())
            playback.end_of_stream()
            assert playback.wait_drained(timeout=5)
    finally:
        playback.volume = 1.0
    heard = listener.samples()
    env = envelope(heard)
    loud = env[env > 100]
    assert np.median(loud) == pytest.approx(0.25 * rms(tone(800.0, RATE, 0.5)), rel=0.15)


@on_each_server
def test_speaker_opened_beside_the_microphone_survives_idling_and_plays_the_later_reply(
    pulse_server, tmp_path
):
    """The daemon's set-up: capture and playback open at once in one process, the
    speaker plays silence for a while, then a reply arrives.  A speaker wrongly
    declared lost while idle is closed, flushed and reopened: the reply goes missing.
    """
    capture = AudioCapture(rate=48000, block_ms=20, history_seconds=5.0)
    speaker = AudioPlayback(input_rate=RATE)
    with capture, speaker:
        assert wait_for(lambda: StreamState.RUNNING == capture.state == speaker.state, 10.0), (
            f"capture {capture.state_detail!r}, speaker {speaker.state_detail!r}"
        )
        with Listener(pulse_server, tmp_path) as listener:
            idle_from = speaker.blocks
            time.sleep(IDLE_BEFORE_REPLY_SECONDS)
            assert speaker.idle and speaker.blocks > idle_from  # silence kept flowing
            speaker.write(dtmf.generate("369", RATE).tobytes())
            speaker.end_of_stream()
            assert speaker.wait_drained(timeout=10)
        assert (speaker.losses, capture.losses) == (0, 0), speaker.state_detail
        assert speaker.state == capture.state == StreamState.RUNNING
    assert dtmf.decode_digits(listener.samples(), RATE) == "369"


def test_a_lost_stream_keeps_the_queued_reply_and_plays_all_of_it_when_back() -> None:
    """Sans-device: the PortAudio callback driven by hand around a loss."""
    out = AudioPlayback(input_rate=RATE, jitter_buffer_ms=60)
    out.rate = RATE  # what the first open sets
    block = RATE // 100
    reply = dtmf.generate("147", RATE)
    out.write(reply.tobytes())
    out.end_of_stream()
    played = [out._callback(None, block, {}, 0)[0] for _ in range(20)]
    assert out.playing
    out._on_lost()  # the supervisor closed the stream
    assert out.playback_state == PlaybackState.BUFFERING
    assert out.queued_seconds == pytest.approx((len(reply) - 20 * block) / RATE)
    while not out.idle:  # the reopened stream
        played.append(out._callback(None, block, {}, 0)[0])
    heard = np.frombuffer(b"".join(played), dtype="<i2")
    assert len(heard) >= len(reply)
    assert dtmf.decode_digits(heard, RATE) == "147"
