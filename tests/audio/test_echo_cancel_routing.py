"""Naming the echo canceller: the route the daemon's streams take, and reading pactl's listings."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.audio import echo_cancel
from appliance.config import ConfigError, load_config

MODULES = (
    "0\tmodule-native-protocol-unix\t\t\n"
    "3\tmodule-loopback\tsource=spk.monitor sink=mic\t\n"
    "4\tmodule-echo-cancel\taec_method=webrtc source_name=ec_source sink_name=ec_sink\t\n"
)
SOURCES = (
    "0\tmic.monitor\tmodule-null-sink.c\ts16le 1ch 48000Hz\tRUNNING\n"
    "2\tec_source\tmodule-echo-cancel.c\tfloat32le 1ch 32000Hz\tIDLE\n"
)
SINKS = (
    "0\tmic\tmodule-null-sink.c\ts16le 1ch 48000Hz\tRUNNING\n"
    "2\tec_sink\tmodule-echo-cancel.c\tfloat32le 1ch 32000Hz\tIDLE\n"
)


def test_a_named_canceller_routes_both_streams() -> None:
    environ: dict[str, str] = {}
    assert echo_cancel.select("ec_source", "ec_sink", environ)
    assert environ == {"PULSE_SOURCE": "ec_source", "PULSE_SINK": "ec_sink"}


def test_no_canceller_leaves_the_route_alone() -> None:
    environ = {"PULSE_SOURCE": "a person's own choice"}
    assert not echo_cancel.select(None, None, environ)
    assert environ == {"PULSE_SOURCE": "a person's own choice"}


def test_a_present_source_and_sink_are_active() -> None:
    found = echo_cancel.status("ec_source", "ec_sink", MODULES, SOURCES, SINKS)
    assert found.active and found.module == "module-echo-cancel"


def test_a_missing_sink_is_not_active() -> None:
    found = echo_cancel.status("ec_source", "speaker_ec", MODULES, SOURCES, SINKS)
    assert found.source_present and not found.sink_present and not found.active


def test_a_monitor_does_not_pass_for_the_source_it_monitors() -> None:
    assert not echo_cancel.status("mic", "ec_sink", MODULES, SOURCES, SINKS).source_present


def test_pipewire_modules_are_recognised() -> None:
    modules = "536870913\tlibpipewire-module-echo-cancel\t\t\n"
    assert echo_cancel.status("a", "b", modules, "", "").module == "libpipewire-module-echo-cancel"


@pytest.mark.parametrize("given", ["source: ec_source", "sink: ec_sink"])
def test_the_configuration_wants_both_source_and_sink(tmp_path: Path, given: str) -> None:
    path = tmp_path / "appliance.yaml"
    path.write_text(f"audio:\n  echo_cancel:\n    {given}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, resolve_secrets=False)
    (problem,) = caught.value.problems
    assert "both its source and its sink" in problem.message


LONG_SOURCES = """Source #0
\tState: RUNNING
\tName: mic.monitor
\tProperties:
\t\tdevice.class = "monitor"
Source #4
\tName: ec_source
\tProperties:
\t\tdevice.master_device = "mic.monitor"
\t\tdevice.class = "filter"
Source #5
\tName: other_filter
\tProperties:
\t\tdevice.master_device = "usb_mic"
"""


def test_the_cancellers_raw_microphone_is_its_master_device() -> None:
    assert echo_cancel.master_source(LONG_SOURCES, "ec_source") == "mic.monitor"


def test_a_source_without_a_master_has_none() -> None:
    assert echo_cancel.master_source(LONG_SOURCES, "mic.monitor") is None
    assert echo_cancel.master_source(LONG_SOURCES, "absent") is None


PIPEWIRE_SOURCES = """Source #43
\tName: mic.monitor
\tProperties:
\t\tnode.name = "mic"
Source #67
\tName: ec_source
\tProperties:
\t\tnode.name = "ec_source"
\t\tnode.group = "echo-cancel-11459-13"
"""
PIPEWIRE_SOURCE_OUTPUTS = """Source Output #58
\tSource: 48
\tProperties:
\t\tnode.group = "loopback-536870915"
Source Output #64
\tSource: 43
\tProperties:
\t\tnode.name = "echo-cancel-capture"
\t\tnode.group = "echo-cancel-11459-13"
"""


def test_pipewires_raw_microphone_is_what_the_cancellers_group_records() -> None:
    found = echo_cancel.master_source(PIPEWIRE_SOURCES, "ec_source", PIPEWIRE_SOURCE_OUTPUTS)
    assert found == "mic.monitor"


def test_without_its_streams_pipewires_raw_microphone_is_unknown() -> None:
    assert echo_cancel.master_source(PIPEWIRE_SOURCES, "ec_source") is None
