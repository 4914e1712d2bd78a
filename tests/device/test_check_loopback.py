"""``appliance check --loopback`` on the PulseAudio test stack: heard, unheard, cancelled.

The speaker's monitor is looped into the microphone with ``module-loopback``
(a speaker beside the microphone, :data:`ROOM_LOSS_DB` down); without it the
speaker is "unheard". The cloud is left unreachable, so a check that passes
otherwise exits OFFLINE.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.audio import echo_cancel
from appliance.audio.loopback import PROBE_DIGITS
from appliance.check import run_check
from appliance.exitcodes import ExitCode
from tests.device.test_check import closed_port, make_config
from tests.fixtures.pulse import (
    MIC_SINK,
    PIPEWIRE_PULSE,
    PULSE_NOREWINDS,
    SPEAKER_SINK,
    stack_params,
)

#: Both servers' echo-cancel and loopback modules, through ALSA's pulse plugin.
on_both_servers = stack_params(PULSE_NOREWINDS, PIPEWIRE_PULSE)

LOOPBACK_LATENCY_MS = 20
#: How much quieter the speaker is at the microphone than as played (a small room).
ROOM_LOSS_DB = 10
# The probe at the cancelled source vs the raw one: measured 47-49 dB here.
MIN_PROBE_SUPPRESSION_DB = 25.0


@pytest.fixture
def speaker_heard_by_mic(pulse_server) -> Iterator[object]:
    module = pulse_server.pactl(
        "load-module",
        "module-loopback",
        f"source={SPEAKER_SINK}.monitor",
        f"sink={MIC_SINK}",
        f"latency_msec={LOOPBACK_LATENCY_MS}",
    ).strip()
    mic = next(
        line.split("\t")[0]
        for line in pulse_server.pactl("list", "short", "sinks").splitlines()
        if line.split("\t")[1] == MIC_SINK
    )
    for stream in pulse_server.pactl("list", "short", "sink-inputs").splitlines():
        if stream.split("\t")[1] == mic:  # the loop's own stream: nothing else plays there
            pulse_server.pactl("set-sink-input-volume", stream.split("\t")[0], f"-{ROOM_LOSS_DB}dB")
    try:
        yield pulse_server
    finally:
        pulse_server.pactl("unload-module", module)


def device_config(tmp_path: Path, extra: str = "") -> Path:
    config = make_config(tmp_path, f"http://127.0.0.1:{closed_port()}", "k" * 32)
    text = config.read_text().replace(
        "  source: file\n", "  source: pyaudio\n  input_rate: 48000\n"
    )
    config.write_text(text.replace("  sink: none\n", "  sink: pyaudio\n" + extra))
    return config


def check_loopback(config: Path) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(
        config=str(config), verbose=False, tone=False, seconds=0.0, loopback=True
    )
    return run_check(args, out=out), out.getvalue()


def line(output: str, start: str) -> str:
    return next(text for text in output.splitlines() if text.startswith(start))


@pytest.mark.audio
@on_both_servers
def test_a_speaker_the_mic_hears_passes_with_its_latency_and_levels(
    speaker_heard_by_mic, tmp_path: Path, record_property
) -> None:
    code, output = check_loopback(device_config(tmp_path))
    assert code == ExitCode.OFFLINE, output  # everything but the cloud is fine
    heard = line(output, "✓ loopback")
    assert f"heard {PROBE_DIGITS} after " in heard
    latency_ms = float(heard.split(" after ")[1].split(" ms")[0])
    echo = float(heard.split("echo ")[1].split(" dBFS")[0])
    record_property("loopback_latency_ms", latency_ms)
    record_property("loopback_echo_dbfs", echo)
    print(heard)
    assert latency_ms >= LOOPBACK_LATENCY_MS  # the loop's own delay, plus the streams'
    assert echo > -30  # the probe comes back ROOM_LOSS_DB under its level as played
    assert "recommended agent.echo: half_duplex" in output
    assert "no clipping" in output


@pytest.mark.audio
@on_both_servers
def test_a_speaker_the_mic_does_not_hear_fails_the_check(pulse_server, tmp_path: Path) -> None:
    code, output = check_loopback(device_config(tmp_path))
    assert code == ExitCode.CHECK_FAILED, output
    assert "✗ loopback: the speaker was not heard (nothing decoded" in output
    assert "not ready: fix loopback" in output


@pytest.mark.audio
@on_both_servers
def test_a_named_canceller_the_server_lacks_fails_the_check(pulse_server, tmp_path: Path) -> None:
    extra = "  echo_cancel:\n    source: ec_source\n    sink: ec_sink\n"
    out = io.StringIO()
    args = argparse.Namespace(
        config=str(device_config(tmp_path, extra)), verbose=False, tone=False, seconds=0.0
    )
    code = run_check(args, out=out)
    output = out.getvalue()
    assert code == ExitCode.CHECK_FAILED, output
    assert (
        "✗ echo cancellation: the sound server has no source 'ec_source' or sink 'ec_sink'"
        in output
    )


@pytest.fixture(autouse=True)
def routing_restored(monkeypatch) -> None:
    """The check routes its streams through os.environ: put it back after each test."""
    for variable in (echo_cancel.SOURCE_VARIABLE, echo_cancel.SINK_VARIABLE):
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)


@pytest.fixture
def echo_canceller(speaker_heard_by_mic) -> Iterator[object]:
    server = speaker_heard_by_mic
    module = server.pactl(
        "load-module",
        "module-echo-cancel",
        "aec_method=webrtc",
        'aec_args="analog_gain_control=0 digital_gain_control=0"',
        f"source_master={MIC_SINK}.monitor",
        f"sink_master={SPEAKER_SINK}",
        "source_name=ec_source",
        "sink_name=ec_sink",
    ).strip()
    try:
        yield server
    finally:
        server.pactl("unload-module", module)


@pytest.mark.audio
@on_both_servers
def test_through_an_active_canceller_the_raw_mic_hears_the_speaker_and_full_duplex_is_advised(
    echo_canceller, tmp_path: Path, record_property
) -> None:
    """The canceller removes the probe from its source; the check hears it on the raw one."""
    extra = "  echo_cancel:\n    source: ec_source\n    sink: ec_sink\n"
    code, output = check_loopback(device_config(tmp_path, extra))
    assert code == ExitCode.OFFLINE, output
    assert "✓ echo cancellation: active: source ec_source, sink ec_sink" in output
    assert f"✓ loopback: heard {PROBE_DIGITS} after " in output
    cancelled = line(output, "    after echo cancellation: ")
    print(cancelled)
    suppression = float(cancelled.split("(")[1].split(" dB lower")[0])
    record_property("loopback_probe_suppression_db", suppression)
    assert suppression >= MIN_PROBE_SUPPRESSION_DB
    assert "raw microphone mic.monitor" in cancelled
    assert "recommended agent.echo: full_duplex" in output


def test_the_command_line_asks_for_the_loopback() -> None:
    from appliance.cli import build_parser

    assert build_parser().parse_args(["check", "--loopback"]).loopback
    assert not build_parser().parse_args(["check"]).loopback
