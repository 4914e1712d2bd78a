"""Earcons: shaped, click-free, at the playback rate, and optional one by one."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.config import EarconsConfig
from appliance.controls.earcons import EARCON_NAMES, EarconPlayer, render_earcon


def samples(name: str, rate: int = 24000, volume: float = 0.3) -> np.ndarray:
    return np.frombuffer(render_earcon(name, rate, volume), dtype="<i2").astype(np.float64)


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("name", EARCON_NAMES)
def test_earcons_are_short_quiet_and_click_free(name: str) -> None:
    x = samples(name)
    assert 0.05 < len(x) / 24000 < 0.5
    peak = np.max(np.abs(x))
    assert 0.25 * 32767 < peak <= 0.3 * 32767 + 1
    # Faded in and out: the first and last samples are near silence.
    assert abs(x[0]) < 0.01 * 32767 and abs(x[-1]) < 0.01 * 32767


def test_start_rises_and_stop_falls() -> None:
    start, stop = samples("start"), samples("stop")
    half = len(start) // 2
    assert dominant_hz(start[:half], 24000) < dominant_hz(start[half:], 24000)
    assert dominant_hz(stop[:half], 24000) > dominant_hz(stop[half:], 24000)


def test_rate_sets_the_pitch_not_the_duration() -> None:
    a, b = samples("error", 24000), samples("error", 48000)
    assert len(b) == pytest.approx(2 * len(a), abs=4)
    assert dominant_hz(a, 24000) == pytest.approx(330, abs=15)
    assert dominant_hz(b, 48000) == pytest.approx(330, abs=15)


class Recorder:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def test_player_writes_enabled_earcons_only() -> None:
    playback = Recorder()
    player = EarconPlayer(EarconsConfig(stop=False, volume=0.5), playback, rate=16000)
    player.play("start")
    player.play("stop")  # switched off
    player.play("saved")
    assert playback.written == [
        render_earcon("start", 16000, 0.5),
        render_earcon("saved", 16000, 0.5),
    ]


def test_player_is_silent_when_earcons_are_off_or_there_is_no_speaker() -> None:
    playback = Recorder()
    EarconPlayer(EarconsConfig(enabled=False), playback).play("start")
    assert playback.written == []
    assert EarconPlayer(EarconsConfig(), None).play("start") is None


def test_unknown_earcon_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown earcon"):
        render_earcon("fanfare")
