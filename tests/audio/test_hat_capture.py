"""A mic HAT's capture through the real PortAudio -> ALSA -> sound-server path: S32_LE, 2 and 4
channels, one channel kept or a mix, into the int16 ring.

The "HAT" is a null sink of the HAT's format (s32le, 2 or 4 channels) whose
monitor is made the default source while a test runs.  What is played into
it carries a different signal on each channel, each int16 signal shifted
into the top 16 bits with random low bits in -32768..32767 below, which
correct rounding drops (and truncation would not: it takes one off each
sample whose low bits are negative).
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Iterator

import numpy as np
import pytest

from appliance import dtmf
from appliance.audio.capture import AudioCapture, StreamState
from appliance.check import Report, check_microphone
from appliance.config import AudioConfig, Config
from tests.audio.signals import align, chirp, silence, tone, wait_for
from tests.fixtures.pulse import MIC_SINK

pytestmark = pytest.mark.audio

RATE = 48000
# The ALSA pulse plugin asks for ALSA's channel order; the HAT's sink has the same,
# so the server passes the channels through without remixing them.
CHANNEL_MAPS = {2: "front-left,front-right", 4: "front-left,front-right,rear-left,rear-right"}


def hat_signals(channels: int) -> list[np.ndarray]:
    """One int16 signal per channel, each different, all the same length."""
    seconds = 0.8
    n = int(RATE * seconds)
    candidates = [
        chirp(RATE, seconds),
        np.resize(dtmf.generate("47", RATE), n),
        tone(523.0, RATE, seconds, amplitude=0.5),
        tone(97.0, RATE, seconds, amplitude=0.9),
    ]
    return [np.asarray(c[:n], dtype=np.int16) for c in candidates[:channels]]


def as_int32(signals: list[np.ndarray], seed: int = 7) -> np.ndarray:
    """Frames (n x channels) of int32: each signal << 16 plus low bits that round away."""
    rng = np.random.default_rng(seed)
    top = np.stack(signals, axis=1).astype(np.int64) << 16
    low = rng.integers(-32768, 32768, size=top.shape)
    return (top + low).astype(np.int32)


class HatSink:
    """A null sink in a HAT's format, its monitor the default source while it is loaded."""

    def __init__(self, server, channels: int) -> None:
        self.server, self.channels = server, channels
        self.name = f"hat{channels}"

    def __enter__(self) -> HatSink:
        self.module = self.server.pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={self.name}",
            "format=s32le",
            f"rate={RATE}",
            f"channels={self.channels}",
            f"channel_map={CHANNEL_MAPS[self.channels]}",
            "norewinds=1",
        ).strip()
        self.server.pactl("set-default-source", f"{self.name}.monitor")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.pactl("set-default-source", f"{MIC_SINK}.monitor")
        self.server.pactl("unload-module", self.module)

    def play(self, frames: np.ndarray) -> None:
        proc = subprocess.Popen(
            [
                "pacat",
                "--playback",
                f"--device={self.name}",
                "--format=s32le",
                f"--rate={RATE}",
                f"--channels={self.channels}",
                f"--channel-map={CHANNEL_MAPS[self.channels]}",
                "--raw",
                "--latency-msec=200",
            ],
            env=self.server.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        proc.stdin.write(np.ascontiguousarray(frames, dtype="<i4").tobytes())
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0


@pytest.fixture(params=[2, 4], ids=["2ch", "4ch"])
def hat(request, pulse_server) -> Iterator[HatSink]:
    with HatSink(pulse_server, request.param) as sink:
        yield sink


def capture_while_playing(cap: AudioCapture, hat: HatSink, frames: np.ndarray) -> np.ndarray:
    """What reached the ring while ``frames`` played into the HAT (with margins around it)."""
    with cap:
        assert wait_for(lambda: cap.state == StreamState.RUNNING, 10.0), cap.state_detail
        start = max(0, cap.ring.write_index - RATE // 2)
        hat.play(np.concatenate([frames, np.zeros((RATE // 5, hat.channels), np.int32)]))
        assert cap.ring.wait_until(cap.ring.write_index + RATE // 2, timeout=5)
        result = cap.ring.read(start, cap.ring.write_index - start)
        assert cap.overflows == 0
    assert result.lost == 0 and result.discontinuities == ()
    return result.samples


def find(heard: np.ndarray, expected: np.ndarray) -> np.ndarray:
    offset, correlation = align(heard, expected)
    assert correlation > 0.99, f"the expected signal is not in the ring ({correlation:.3f})"
    return heard[offset : offset + len(expected)]


def test_the_chosen_channel_of_a_32_bit_hat_arrives_in_the_ring_rounded_to_16_bits(hat) -> None:
    signals = hat_signals(hat.channels)
    chosen = 1  # the DTMF channel: present on both HATs, unlike any other channel
    cap = AudioCapture(
        rate=RATE, channels=hat.channels, channel=chosen, sample_format="int32", block_ms=20
    )
    heard = capture_while_playing(cap, hat, as_int32(signals))
    assert cap.plan.describe() == f"S32_LE, {hat.channels} channels, channel 1"
    np.testing.assert_array_equal(find(heard, signals[chosen]), signals[chosen])


def test_a_mix_of_all_channels_of_a_32_bit_hat_is_their_rounded_mean(hat) -> None:
    signals = hat_signals(hat.channels)
    frames = as_int32(signals)
    cap = AudioCapture(rate=RATE, channels=hat.channels, mix_channels=(), sample_format="int32")
    heard = capture_while_playing(cap, hat, frames)
    mean = frames.astype(np.float64).mean(axis=1) / 65536
    expected = np.floor(mean + 0.5).astype(np.int16)
    np.testing.assert_array_equal(find(heard, expected), expected)


def test_a_listed_mix_leaves_the_other_channels_out(pulse_server) -> None:
    signals = hat_signals(4)
    frames = as_int32(signals)
    with HatSink(pulse_server, 4) as hat:
        cap = AudioCapture(rate=RATE, channels=4, mix_channels=(0, 3), sample_format="int32")
        heard = capture_while_playing(cap, hat, frames)
    expected = np.floor(frames[:, [0, 3]].astype(np.float64).mean(axis=1) / 65536 + 0.5)
    expected16 = expected.astype(np.int16)
    np.testing.assert_array_equal(find(heard, expected16), expected16)


def test_check_reports_the_capture_format_and_channels_of_a_hat(pulse_server) -> None:
    config = Config(
        audio=AudioConfig(input_channels=4, input_mix=[], input_format="int32", input_rate=RATE)
    )
    out = io.StringIO()
    report = Report(out)
    with HatSink(pulse_server, 4):
        check_microphone(report, config, seconds=0.3)
    assert "S32_LE, 4 channels, mix of 0,1,2,3" in out.getvalue()
    assert report.failed == []


def test_silence_between_sounds_is_exactly_zero_after_rounding(hat) -> None:
    # Low bits alone (|x| < 32768) must round to 0, never to -1: no DC offset from a HAT.
    frames = as_int32([silence(RATE, 0.5)] * hat.channels)
    cap = AudioCapture(rate=RATE, channels=hat.channels, channel=0, sample_format="int32")
    heard = capture_while_playing(cap, hat, frames)
    assert not heard.any()
