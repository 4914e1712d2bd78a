"""``appliance check`` against the local emulator: exit codes for broken, offline and good."""

from __future__ import annotations

import argparse
import io
import socket
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.check import Report, check_sound_server, run_check
from appliance.config import Config
from appliance.exitcodes import ExitCode
from tests.fixtures.pulse import PIPEWIRE_ALSA, PULSE_NOREWINDS, stack_params


def write_wav(path: Path, rate: int = 16000, seconds: float = 1.0) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.25 * 32767 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.tobytes())
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(tmp_path: Path, base_url: str, key: str, *, button: bool = False) -> Path:
    key_file = tmp_path / "api-key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    wav = write_wav(tmp_path / "mic.wav")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""\
endpoints:
  base_url: {base_url}
auth:
  api_key_file: {key_file}
audio:
  source: file
  input_file: {wav}
  sink: none
button:
  enabled: {"true" if button else "false"}
  keyboard: true
state_dir: {tmp_path / "state"}
spool:
  min_free_bytes: 0
"""
    )
    return config


def check(config: Path, seconds: float = 0.2) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(config=str(config), verbose=False, tone=False, seconds=seconds)
    return run_check(args, out=out), out.getvalue()


def test_all_good_against_the_emulator(emulator, tmp_path: Path, mock_pins) -> None:
    config = make_config(tmp_path, emulator.http_url, emulator.api_key, button=True)
    code, output = check(config)
    assert code == ExitCode.OK, output
    for label in ("configuration", "credential", "microphone", "GPIO", "cloud", "spool"):
        assert any(line.startswith(f"✓ {label}") for line in output.splitlines()), label
    assert "credential accepted" in output
    assert "✗" not in output
    assert emulator.api_key not in output


def test_broken_config_names_file_line_and_key(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("mode: live\nbutton:\n  pinn: 17\n")
    code, output = check(config)
    assert code == ExitCode.CONFIG
    assert f"{config}:3: button.pinn: unknown setting; did you mean 'button.pin'?" in output


def test_unreachable_cloud_is_offline_not_failed(tmp_path: Path) -> None:
    config = make_config(tmp_path, f"http://127.0.0.1:{closed_port()}", "k" * 32)
    code, output = check(config)
    assert code == ExitCode.OFFLINE, output
    assert "! cloud: offline" in output and "recordings will be kept" in output


def test_refused_key_fails_the_check(emulator, tmp_path: Path) -> None:
    config = make_config(tmp_path, emulator.http_url, "wrong-key-0123456789")
    code, output = check(config)
    assert code == ExitCode.CHECK_FAILED, output
    assert "✗ cloud" in output
    assert "wrong-key-0123456789" not in output


def test_missing_key_file_is_a_credential_failure(emulator, tmp_path: Path) -> None:
    config = make_config(tmp_path, emulator.http_url, emulator.api_key)
    (tmp_path / "api-key").unlink()
    code, output = check(config)
    assert code == ExitCode.CHECK_FAILED, output
    assert "✗ credential" in output


def test_unusable_gpio_pin_fails(emulator, tmp_path: Path, mock_pins) -> None:
    config = make_config(tmp_path, emulator.http_url, emulator.api_key, button=True)
    holder = __import__("gpiozero").Button(17)  # someone else holds the pin
    try:
        code, output = check(config)
    finally:
        holder.close()
    assert code == ExitCode.CHECK_FAILED, output
    assert "✗ GPIO: button on GPIO17" in output


def sound_server_lines(config: Config, environ: dict[str, str], alsa_default: Path) -> str:
    out = io.StringIO()
    check_sound_server(Report(out), config, environ, alsa_default)
    return out.getvalue()


def test_sound_server_is_not_checked_when_audio_is_files(tmp_path: Path) -> None:
    config = Config()
    config.audio.source, config.audio.sink = "file", "none"
    lines = sound_server_lines(config, {"XDG_RUNTIME_DIR": str(tmp_path)}, tmp_path / "absent")
    assert lines == "– sound server: not used (audio from and to files)\n"


def test_plain_alsa_is_fine_on_a_device_without_a_sound_server(tmp_path: Path) -> None:
    lines = sound_server_lines(Config(), {"XDG_RUNTIME_DIR": str(tmp_path)}, tmp_path / "absent")
    assert lines.startswith("✓ sound server: none: plain ALSA")


def test_alsa_default_leading_to_an_unreachable_pipewire_is_a_warning(tmp_path: Path) -> None:
    """The desktop image's ALSA default is PipeWire's; a system service cannot reach it."""
    alsa_default = tmp_path / "99-pipewire-default.conf"
    alsa_default.write_text("pcm.!default { type pipewire }\n")
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    lines = sound_server_lines(Config(), env, alsa_default)
    assert lines.startswith("! sound server: none") and "name the card" in lines
    named = Config()
    named.audio.input_device = named.audio.output_device = "USB Audio"
    assert sound_server_lines(named, env, alsa_default).startswith("✓ sound server: none")


@pytest.mark.audio
@stack_params(PULSE_NOREWINDS, PIPEWIRE_ALSA)
def test_real_microphone_level_through_pulseaudio(pulse_server, tmp_path: Path) -> None:
    config = make_config(tmp_path, f"http://127.0.0.1:{closed_port()}", "k" * 32)
    text = config.read_text().replace("  source: file\n", "  source: pyaudio\n")
    config.write_text(text.replace("  sink: none\n", "  sink: pyaudio\n"))
    rate = 48000
    t = np.arange(rate * 6) / rate
    speech = (0.3 * 32767 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)
    player = pulse_server.play_into_mic(speech, rate)
    try:
        out = io.StringIO()
        args = argparse.Namespace(config=str(config), verbose=False, tone=True, seconds=0.5)
        code = run_check(args, out=out)
    finally:
        player.kill()
        player.wait()
    output = out.getvalue()
    assert code == ExitCode.OFFLINE, output
    mic = next(line for line in output.splitlines() if line.startswith("✓ microphone"))
    loudest = float(mic.split("loudest ")[1].split(" dBFS")[0])
    assert loudest > -30, output  # a -10 dBFS sine was "spoken" into the mic
    assert "✓ speaker" in output and "played a 440 Hz tone" in output
    server = "PipeWire" if pulse_server.stack == PIPEWIRE_ALSA else "PulseAudio"
    assert f"✓ sound server: {server} ({pulse_server.runtime_dir}/" in output, output
