"""Mic HAT settings: the capture's format and channels, and the APA102 ring, load or are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config

KEY = "test-api-key-0123456789"


def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", KEY)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path)


def problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, monkeypatch, text)
    return [f"{p.line} {p.key}: {p.message}" for p in info.value.problems]


def test_a_respeaker_4_mic_configuration_loads(tmp_path, monkeypatch) -> None:
    config = load(
        tmp_path,
        monkeypatch,
        "audio:\n  input_format: int32\n  input_channels: 4\n  input_mix: []\n"
        "led:\n  kind: apa102\n  count: 12\n  brightness: 0.1\n",
    )
    assert (config.audio.input_format, config.audio.input_channels) == ("int32", 4)
    assert config.audio.input_mix == []
    assert (config.led.kind, config.led.count, config.led.pins) == ("apa102", 12, [])


def test_by_default_one_int16_channel_is_kept(tmp_path, monkeypatch) -> None:
    audio = load(tmp_path, monkeypatch, "mode: live\n").audio
    assert (audio.input_format, audio.input_channels, audio.input_mix) == ("int16", None, None)


def test_a_kept_channel_beyond_those_opened_is_named(tmp_path, monkeypatch) -> None:
    found = problems(tmp_path, monkeypatch, "audio:\n  input_channels: 2\n  input_channel: 2\n")
    assert found == [
        "3 audio.input_channel: channel 2 is not among the 2 opened (channels count from 0)"
    ]


def test_a_mixed_channel_beyond_those_opened_is_named_by_its_item(tmp_path, monkeypatch) -> None:
    text = "audio:\n  input_channels: 4\n  input_mix:\n    - 0\n    - 4\n"
    assert problems(tmp_path, monkeypatch, text) == [
        "5 audio.input_mix[1]: channel 4 is not among the 4 opened"
    ]


def test_a_channel_mixed_in_twice_is_refused(tmp_path, monkeypatch) -> None:
    found = problems(tmp_path, monkeypatch, "audio:\n  input_mix: [1, 1]\n")
    assert found == ["2 audio.input_mix: each channel can be mixed in only once"]


def test_an_unknown_capture_format_is_refused(tmp_path, monkeypatch) -> None:
    [found] = problems(tmp_path, monkeypatch, "audio:\n  input_format: int24\n")
    assert found.startswith("2 audio.input_format: 'int24' is not allowed")


def test_an_apa102_ring_takes_no_gpio_pins(tmp_path, monkeypatch) -> None:
    found = problems(tmp_path, monkeypatch, "led:\n  kind: apa102\n  pins: [5]\n")
    assert found == ["3 led.pins: led kind 'apa102' needs 0 pin(s), got 1"]
