"""A microphone unplugged and plugged back under a new name comes back, with the speaker open.

The "USB microphone" is an ALSA device of its own (``usbmic1``, a pulse PCM
on a null sink's monitor) chosen by the pattern ``usbmic``, as a user's
``audio.input_device`` would.  It is unplugged (the sink unloaded, the ALSA
device gone) and comes back as ``usbmic2``, as a USB card does under a new
card number.  PortAudio lists devices only when it is initialised, and the
speaker keeps it initialised, so the microphone can come back only if the
audio layer is re-initialised: the speaker's queued reply and the ring's
history must survive that.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance import dtmf
from appliance.audio.capture import AudioCapture, StreamState
from appliance.audio.playback import AudioPlayback
from tests.audio.signals import wait_for

pytestmark = pytest.mark.audio
log = logging.getLogger(__name__)

RATE = 48_000
SPEAKER_RATE = 24_000
REPLY_SECONDS = 4.0
TONE_LEVEL = 2000  # the reply's 1 kHz tone peaks at 8000; silence and fades are below


class UsbMicrophone:
    """A capture device that can be unplugged and plugged back under another name."""

    def __init__(self, server) -> None:
        self.server = server
        self.conf = Path(server.env["ALSA_CONFIG_PATH"])
        self.original = self.conf.read_text()
        self.name: str | None = None
        self.pactl = server.pactl
        self.cli_module = self.pactl("load-module", "module-cli-protocol-unix").strip()

    def plug(self, name: str) -> None:
        self.pactl(
            "load-module", "module-null-sink", f"sink_name={name}",
            "format=s16le", f"rate={RATE}", "channels=1",
        )  # fmt: skip
        self.conf.write_text(
            self.original + f'pcm.{name} {{ type pulse device "{name}.monitor" }}\n'
        )
        self.name = name

    def unplug(self) -> None:
        """Gone, as a USB card is: its streams end (PulseAudio would move them elsewhere)."""
        assert self.name is not None
        sources = [line.split("\t") for line in self.pactl("list", "short", "sources").splitlines()]
        (source,) = [f[0] for f in sources if f[1] == f"{self.name}.monitor"]
        for line in self.pactl("list", "short", "source-outputs").splitlines():
            index, on_source = line.split("\t")[:2]
            if on_source == source:  # pactl cannot end a stream; the CLI protocol can
                subprocess.run(
                    ["pacmd", "kill-source-output", index], env=self.server.env, timeout=10
                )
        self.pactl("unload-module", self.server.module_id(self.name))
        self.conf.write_text(self.original)
        self.name = None

    def speak(self, samples: np.ndarray) -> None:
        """Play int16 mono ``samples`` into the microphone and wait until they are in."""
        assert self.name is not None
        pacat = subprocess.Popen(
            ["pacat", "--playback", f"--device={self.name}", "--format=s16le",
             f"--rate={RATE}", "--channels=1", "--raw", "--latency-msec=50"],
            env=self.server.env, stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert pacat.stdin is not None
        pacat.stdin.write(np.ascontiguousarray(samples, dtype="<i2").tobytes())
        pacat.stdin.close()
        assert pacat.wait(10) == 0

    def close(self) -> None:
        if self.name is not None:
            self.unplug()
        self.conf.write_text(self.original)
        self.pactl("unload-module", self.cli_module)


@pytest.fixture
def usb_microphone(pulse_server) -> Iterator[UsbMicrophone]:
    mic = UsbMicrophone(pulse_server)
    mic.plug("usbmic1")
    try:
        yield mic
    finally:
        mic.close()


def tone_seconds(samples: np.ndarray, rate: int) -> float:
    """How long a tone sounds in ``samples``, counted in 10 ms frames."""
    frame = rate // 100
    n = len(samples) // frame
    frames = np.abs(samples[: n * frame].astype(np.int32)).reshape(n, frame).max(axis=1)
    return float(np.count_nonzero(frames > TONE_LEVEL)) / 100


def test_a_microphone_back_under_a_new_name_is_found_and_nothing_queued_is_lost(
    pulse_server, usb_microphone, tmp_path
):
    cap = AudioCapture("usbmic", rate=RATE, block_ms=20, retry_initial=0.2, retry_max=0.5)
    cap.rescan_after = 1.0
    out = AudioPlayback(input_rate=SPEAKER_RATE, retry_initial=0.2, retry_max=0.5)
    heard_path = tmp_path / "speaker.raw"
    with cap, out:
        assert wait_for(lambda: cap.state == StreamState.RUNNING, 10.0), cap.state_detail
        assert wait_for(lambda: out.state == StreamState.RUNNING, 10.0), out.state_detail
        assert "usbmic1" in cap.device_label
        said_from = cap.ring.write_index
        usb_microphone.speak(dtmf.generate("14", RATE))
        assert cap.ring.wait_until(cap.ring.write_index + RATE // 2, timeout=5)
        said_until = cap.ring.write_index
        listener = pulse_server.record_speaker(heard_path, SPEAKER_RATE)
        try:
            time.sleep(0.5)
            # A reply is playing when the microphone goes: it must play out whole.
            t = np.arange(round(REPLY_SECONDS * SPEAKER_RATE)) / SPEAKER_RATE
            out.write((8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16))
            out.end_of_stream()
            time.sleep(0.3)
            usb_microphone.unplug()
            assert wait_for(lambda: cap.state == StreamState.LOST, 5.0), cap.state
            usb_microphone.plug("usbmic2")  # back, under another card's name
            assert wait_for(lambda: cap.state == StreamState.RUNNING, 15.0), cap.state_detail
            assert out.wait_drained(timeout=15)
            time.sleep(0.3)
        finally:
            listener.terminate()
            listener.wait(5)
        back_at = cap.ring.write_index
        usb_microphone.speak(dtmf.generate("7", RATE))
        assert cap.ring.wait_until(cap.ring.write_index + RATE // 2, timeout=5)
        after = cap.ring.read(back_at, cap.ring.write_index - back_at)
        history = cap.ring.read(said_from, said_until - said_from)

    assert "usbmic2" in cap.device_label
    assert out.reinitialised >= 1 and out.losses == 0  # closed on purpose, never lost
    assert dtmf.decode_digits(after.samples, RATE) == "7"  # the new microphone is heard
    assert history.lost == 0 and dtmf.decode_digits(history.samples, RATE) == "14"
    assert len(cap.ring.discontinuities) >= 1
    heard = np.frombuffer(heard_path.read_bytes()[: heard_path.stat().st_size // 2 * 2], "<i2")
    assert tone_seconds(heard, SPEAKER_RATE) == pytest.approx(REPLY_SECONDS, abs=0.1)
    log.info(
        "microphone back as %s; speaker reopened %d time(s)", cap.device_label, out.reinitialised
    )
