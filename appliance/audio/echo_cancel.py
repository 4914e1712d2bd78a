"""Routing the daemon through the sound server's echo canceller, and seeing whether it is there.

PulseAudio's ``module-echo-cancel`` (``aec_method=webrtc``) and PipeWire's
``libpipewire-module-echo-cancel`` each make a source (the microphone minus
what was played) and a sink (the speaker, which the canceller takes as its
far-end reference). The daemon uses them by name: libpulse, under ALSA's
``pulse`` device on PulseAudio and on PipeWire's pulse server alike, opens a
stream with no device of its own on ``PULSE_SOURCE`` / ``PULSE_SINK``, read
when the stream opens. The parsing of ``pactl`` listings is here, apart
from running it (``appliance check`` does that).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass

SOURCE_VARIABLE = "PULSE_SOURCE"
SINK_VARIABLE = "PULSE_SINK"
#: Module names that provide echo cancellation, as ``pactl list short modules`` names them.
ECHO_CANCEL_MODULES = ("module-echo-cancel", "libpipewire-module-echo-cancel")


def route_environment(source: str | None, sink: str | None) -> dict[str, str]:
    """The variables that send the daemon's streams through the canceller (empty: unused)."""
    if source is None or sink is None:
        return {}
    return {SOURCE_VARIABLE: source, SINK_VARIABLE: sink}


def select(
    source: str | None, sink: str | None, environ: MutableMapping[str, str] | None = None
) -> bool:
    """Route the streams this process opens from now on through the canceller, if named
    (``audio.echo_cancel``); the configuration checks that both or neither are."""
    route = route_environment(source, sink)
    (os.environ if environ is None else environ).update(route)
    return bool(route)


def short_list_names(listing: str) -> list[str]:
    """The names (second column) of ``pactl list short sources|sinks|modules``."""
    names = []
    for line in listing.splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1]:
            names.append(fields[1])
    return names


@dataclass(frozen=True)
class EchoCancelStatus:
    """What the sound server has of the configured canceller."""

    source_present: bool
    sink_present: bool
    #: The echo-cancel module the server lists (PipeWire's own modules are not listed).
    module: str | None

    @property
    def active(self) -> bool:
        return self.source_present and self.sink_present


def status(source: str, sink: str, modules: str, sources: str, sinks: str) -> EchoCancelStatus:
    """Read the named canceller's presence from the three ``pactl list short`` listings."""
    module = next((m for m in short_list_names(modules) if m in ECHO_CANCEL_MODULES), None)
    return EchoCancelStatus(
        source_present=source in short_list_names(sources),
        sink_present=sink in short_list_names(sinks),
        module=module,
    )


def _blocks(listing: str, heading: str) -> list[tuple[str, dict[str, str]]]:
    """``pactl list`` long output as (number, {field or property: value}) per ``heading`` block."""
    blocks: list[tuple[str, dict[str, str]]] = []
    for raw in listing.splitlines():
        line = raw.strip()
        if line.startswith(heading + " #"):
            blocks.append((line.removeprefix(heading + " #"), {}))
        elif blocks and ": " in line and " = " not in line:
            key, _, value = line.partition(": ")
            blocks[-1][1].setdefault(key, value)
        elif blocks and " = " in line:
            key, _, value = line.partition(" = ")
            blocks[-1][1].setdefault(key, value.strip('"'))
    return blocks


def master_source(sources: str, source: str, source_outputs: str = "") -> str | None:
    """The raw microphone under the canceller's ``source``; None when it cannot be told.

    From ``pactl list sources`` and ``pactl list source-outputs``: PulseAudio's
    module names it in the source's ``device.master_device``; PipeWire's
    records from it with a stream in the source's ``node.group``.
    """
    listed = _blocks(sources, "Source")
    fields = next((f for _, f in listed if f.get("Name") == source), None)
    if fields is None:
        return None
    if fields.get("device.master_device"):
        return fields["device.master_device"]
    group = fields.get("node.group")
    if not group:
        return None
    for _, stream in _blocks(source_outputs, "Source Output"):
        if stream.get("node.group") == group:
            index = stream.get("Source")
            return next((f.get("Name") for n, f in listed if n == index), None)
    return None
