"""Finding audio devices by a stable name and the sample rates they really support.

PortAudio device indexes change between boots and when USB devices are
plugged in a different order; names ("USB PnP Sound Device: Audio (hw:1,0)",
"pulse", "default") do not, so configuration names a device by a substring.
A device's advertised default rate says little about what it accepts, so
rates are probed with ``is_format_supported``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TextIO

import pyaudio

from appliance.audio.stream import PORTAUDIO_LOCK

Kind = Literal["input", "output"]

COMMON_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 32000, 44100, 48000, 96000)
PREFERRED_INPUT_RATES: tuple[int, ...] = (16000, 48000, 44100)
PREFERRED_OUTPUT_RATES: tuple[int, ...] = (24000, 48000, 44100)


class DeviceNotFound(LookupError):
    """No device matches the configured name (or there is no default device)."""


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device and what it can do."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_rate: int
    input_rates: tuple[int, ...] = field(default=())
    output_rates: tuple[int, ...] = field(default=())

    def channels(self, kind: Kind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels


def _info(
    pa: pyaudio.PyAudio, raw: Mapping[str, str | int | float], rates: Sequence[int] | None
) -> DeviceInfo:
    index = int(raw["index"])
    host_api = str(pa.get_host_api_info_by_index(int(raw["hostApi"]))["name"])
    in_ch, out_ch = int(raw["maxInputChannels"]), int(raw["maxOutputChannels"])
    return DeviceInfo(
        index=index,
        name=str(raw["name"]),
        host_api=host_api,
        max_input_channels=in_ch,
        max_output_channels=out_ch,
        default_rate=int(raw["defaultSampleRate"]),
        input_rates=supported_rates(pa, index, "input", 1, rates) if in_ch and rates else (),
        output_rates=supported_rates(pa, index, "output", 1, rates) if out_ch and rates else (),
    )


def is_rate_supported(
    pa: pyaudio.PyAudio,
    index: int,
    kind: Kind,
    channels: int,
    rate: int,
    sample_format: int = pyaudio.paInt16,
) -> bool:
    """Ask PortAudio whether ``index`` opens ``sample_format`` at ``rate`` with ``channels``."""
    try:
        if kind == "input":
            return bool(
                pa.is_format_supported(
                    rate, input_device=index, input_channels=channels, input_format=sample_format
                )
            )
        return bool(
            pa.is_format_supported(
                rate, output_device=index, output_channels=channels, output_format=pyaudio.paInt16
            )
        )
    except ValueError:
        return False


def supported_rates(
    pa: pyaudio.PyAudio,
    index: int,
    kind: Kind,
    channels: int = 1,
    rates: Sequence[int] | None = COMMON_RATES,
) -> tuple[int, ...]:
    return tuple(r for r in rates or () if is_rate_supported(pa, index, kind, channels, r))


def list_devices(
    pa: pyaudio.PyAudio, rates: Sequence[int] | None = COMMON_RATES
) -> list[DeviceInfo]:
    """Every device PortAudio sees, with probed int16 mono rates (``rates=None`` skips probing)."""
    return [_info(pa, pa.get_device_info_by_index(i), rates) for i in range(pa.get_device_count())]


def find_device(pa: pyaudio.PyAudio, name_substring: str | None, kind: Kind) -> DeviceInfo:
    """The device whose name contains ``name_substring`` (case-insensitive), or the default.

    An exact name match wins over a substring match; otherwise the first
    matching device with channels of the right kind is taken.
    """
    if not name_substring:
        try:
            raw = (
                pa.get_default_input_device_info()
                if kind == "input"
                else pa.get_default_output_device_info()
            )
        except OSError as exc:
            raise DeviceNotFound(f"no default {kind} device") from exc
        return _info(pa, raw, None)
    wanted = name_substring.lower()
    candidates = [d for d in list_devices(pa, rates=None) if d.channels(kind) > 0]
    for device in candidates:
        if device.name.lower() == wanted:
            return device
    for device in candidates:
        if wanted in device.name.lower():
            return device
    names = ", ".join(repr(d.name) for d in candidates) or "none"
    raise DeviceNotFound(f"no {kind} device matches {name_substring!r} (have: {names})")


def choose_rate(
    pa: pyaudio.PyAudio,
    device: DeviceInfo,
    kind: Kind,
    channels: int,
    requested: int | None,
    preferred: Sequence[int],
    sample_format: int = pyaudio.paInt16,
) -> int:
    """``requested`` if the device takes it, else the first preferred rate it takes.

    Falls back to the device's default rate; raises if even that is refused
    (at ``channels`` in ``sample_format``, a PortAudio format constant).
    """
    if requested:
        if is_rate_supported(pa, device.index, kind, channels, requested, sample_format):
            return requested
        raise DeviceNotFound(
            f"{device.name!r} does not support {requested} Hz {kind}"
            f" ({channels} channel(s), {_format_name(sample_format)})"
        )
    for rate in (*preferred, device.default_rate):
        if is_rate_supported(pa, device.index, kind, channels, rate, sample_format):
            return rate
    raise DeviceNotFound(
        f"{device.name!r} supports none of the rates {list(preferred)} {kind}"
        f" ({channels} channel(s), {_format_name(sample_format)})"
    )


def _format_name(sample_format: int) -> str:
    names = {pyaudio.paInt16: "S16_LE", pyaudio.paInt32: "S32_LE"}
    return names.get(sample_format, f"PortAudio format {sample_format}")


def _selected(pa: pyaudio.PyAudio, name: str | None, kind: Kind) -> int | None:
    try:
        return find_device(pa, name, kind).index
    except DeviceNotFound:
        return None


def devices_command(
    input_name: str | None, output_name: str | None, stream: TextIO | None = None
) -> int:
    """Print the device table (``appliance devices``); ``*`` marks the configured choice.

    Returns 0 when both configured devices are found, 1 otherwise.
    """
    out = stream or sys.stdout
    with PORTAUDIO_LOCK:
        pa = pyaudio.PyAudio()
        try:
            devices = list_devices(pa)
            chosen_in = _selected(pa, input_name, "input")
            chosen_out = _selected(pa, output_name, "output")
        finally:
            pa.terminate()
    header = f"{'':2}{'#':>3}  {'name':<40} {'api':<6} {'in':>3} {'out':>3}  rates (Hz)"
    print(header, file=out)
    for d in devices:
        mark = ("I" if d.index == chosen_in else " ") + ("O" if d.index == chosen_out else " ")
        rates = sorted(set(d.input_rates) | set(d.output_rates))
        rate_text = ",".join(str(r) for r in rates) or "-"
        print(
            f"{mark:2}{d.index:>3}  {d.name[:40]:<40} {d.host_api[:6]:<6} "
            f"{d.max_input_channels:>3} {d.max_output_channels:>3}  {rate_text}",
            file=out,
        )
    status = 0
    for kind, name, chosen in (
        ("input", input_name, chosen_in),
        ("output", output_name, chosen_out),
    ):
        label = repr(name) if name else "default"
        if chosen is None:
            print(f"{kind}: {label}: NOT FOUND", file=out)
            status = 1
        else:
            print(f"{kind}: {label} -> #{chosen} (marked {kind[0].upper()})", file=out)
    return status
