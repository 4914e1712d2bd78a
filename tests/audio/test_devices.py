"""Device listing and selection against the real PortAudio device list (PulseAudio stack)."""

import io

import pyaudio
import pytest

from appliance.audio.devices import DeviceNotFound, choose_rate, devices_command, find_device

pytestmark = pytest.mark.audio


def test_devices_are_found_by_name_substring_and_probed_for_rates(pulse_server):
    pa = pyaudio.PyAudio()
    try:
        device = find_device(pa, "PULS", "input")  # case-insensitive substring
        assert device.name == "pulse"
        assert find_device(pa, None, "output").max_output_channels > 0
        assert choose_rate(pa, device, "input", 1, None, (16000, 48000)) == 16000
        with pytest.raises(DeviceNotFound, match="no input device matches 'usb mic'"):
            find_device(pa, "usb mic", "input")
    finally:
        pa.terminate()


def test_devices_command_marks_the_configured_devices(pulse_server):
    out = io.StringIO()
    assert devices_command("pulse", None, stream=out) == 0
    table = out.getvalue()
    pulse_row = next(line for line in table.splitlines() if line.split()[-5:-4] == ["pulse"])
    assert pulse_row.startswith("I")
    assert "48000" in pulse_row and "16000" in pulse_row
    out = io.StringIO()
    assert devices_command("no such mic", None, stream=out) == 1
    assert "input: 'no such mic': NOT FOUND" in out.getvalue()
