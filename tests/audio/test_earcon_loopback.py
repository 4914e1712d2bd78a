"""The start earcon never reaches the service, on a device whose microphone hears its speaker.

The speaker's monitor is looped into the microphone (PulseAudio
``module-loopback``, 20 ms: a speaker beside the microphone plus some room),
the whole daemon runs on the real devices against the emulator, and the
audio the emulator received is searched for the earcon's chirp with a
matched filter (live: the streamed audio; record: the uploaded recording).
The same chirp written to the speaker as plain audio
(not as an earcon) during the session must be found, so the loop, the
detector and the session's audio are shown to work; the start earcon,
played with the press, must not be, and a digit spoken in the pre-roll
before it must still be transcribed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance import dtmf
from appliance.app import Appliance
from appliance.audio.stream import StreamState
from appliance.config import Config
from appliance.controls.earcons import render_earcon
from appliance.secrets import Secret
from tests.fixtures.pulse import MIC_SINK, SPEAKER_SINK

pytestmark = pytest.mark.audio

CAPTURE_RATE = 48_000
# The acoustic path of the test stack: what the speaker plays is in the microphone this
# much later (PulseAudio's loopback adds it), inside the default echo tail.
LOOPBACK_LATENCY_MS = 20
# Matched-filter response, as a fraction of the earcon as played: found / not found.
FOUND = 0.5
ABSENT = 0.1


@pytest.fixture
def speaker_heard_by_mic(pulse_server) -> Iterator[object]:
    """The speaker's monitor looped into the microphone sink for one test."""
    module = pulse_server.pactl(
        "load-module",
        "module-loopback",
        f"source={SPEAKER_SINK}.monitor",
        f"sink={MIC_SINK}",
        f"latency_msec={LOOPBACK_LATENCY_MS}",
    ).strip()
    try:
        yield pulse_server
    finally:
        pulse_server.pactl("unload-module", module)


def device_config(tmp_path: Path, emulator, mode: str) -> Config:
    config = Config()
    config.mode = mode
    config.state_dir = tmp_path / "state"
    config.endpoints.base_url = emulator.http_url
    config.audio.input_rate = CAPTURE_RATE
    # A pre-roll longer than the 1 s the agent's audio may lead: its end is sent while
    # the greeting plays (as after a slow connect), which half duplex must not mute.
    config.audio.preroll_seconds = 1.5
    config.button.enabled = False
    config.upload.poll_seconds = 0.1
    # Sounds at the configured level (the run-time volume starts lower): the matched
    # filter's response to the plain chirp is then 1, to the earcon too if it leaked.
    config.volume.initial_percent = 100
    config.api_key = Secret(emulator.api_key)
    return config


async def audio_received(emulator, mode: str) -> tuple[np.ndarray, int]:
    """What reached the service: the live session's stream, or the uploaded recording."""
    if mode in ("live", "agent"):
        sessions = (
            emulator.state.streaming_sessions() if mode == "live" else agent_sessions(emulator)
        )
        (record,) = sessions
        return record.audio(), record.rate
    deadline = time.monotonic() + 20
    while not emulator.state.uploads:
        assert time.monotonic() < deadline, "the recording was never uploaded"
        await asyncio.sleep(0.1)
    (upload,) = emulator.state.uploads.values()
    return dtmf.read_wav(upload.path)


def agent_sessions(emulator) -> list:
    return [s for s in emulator.state.sessions if s.kind == "agent"]


def chirp_response(audio: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Matched filter: at each offset, how much of ``template`` (as played) ``audio`` holds."""
    x, t = audio.astype(np.float64), template.astype(np.float64)
    n = len(x) + len(t)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(t, size)), size)[: len(x)]
    return corr / float(np.dot(t, t))


def occurrences(response: np.ndarray, rate: int, level: float) -> list[float]:
    """Seconds into the audio where the response peaks above ``level`` (one per 0.3 s)."""
    found: list[float] = []
    for i in np.flatnonzero(response > level):
        at = i / rate
        if not found or at - found[-1] > 0.3:
            found.append(at)
    return found


@pytest.mark.parametrize("mode", ["live", "record", "agent"])
async def test_the_start_earcon_is_absent_from_the_audio_sent_and_the_preroll_is_kept(
    tmp_path, emulator, speaker_heard_by_mic, mode
):
    pulse = speaker_heard_by_mic
    config = device_config(tmp_path, emulator, mode)
    app = Appliance(config)
    runner = asyncio.create_task(app.run())
    try:
        await asyncio.wait_for(app.ready.wait(), 20)
        daemon = app.daemon
        assert daemon is not None
        speaker = daemon.components.speaker
        assert speaker is not None
        deadline = time.monotonic() + 10
        while speaker.state != StreamState.RUNNING:
            assert time.monotonic() < deadline, speaker.state_detail
            await asyncio.sleep(0.05)
        while daemon.ring.write_index < (config.audio.preroll_seconds + 1) * CAPTURE_RATE:
            await asyncio.sleep(0.05)  # the ring holds the whole pre-roll before the press
        # A digit spoken just before the press: the pre-roll keeps it.
        speaking = pulse.play_into_mic(dtmf.generate("5", CAPTURE_RATE, lead_ms=0), CAPTURE_RATE)
        assert await asyncio.to_thread(speaking.wait, 10) == 0
        pressed = time.monotonic()
        daemon.press("short", at=pressed)  # the start earcon plays, the session starts
        # The agent greets and answers the 5 first; the plain chirp comes when it is quiet.
        await asyncio.sleep(3.0 if mode == "agent" else 1.0)
        plain_at = time.monotonic()
        speaker.write(render_earcon("start", 24_000, config.earcons.volume))
        await asyncio.sleep(1.5)
        daemon.press("long" if mode == "agent" else "short")  # the agent ends on a long one
        await asyncio.wait_for(daemon.wait_idle(), 30)
        audio, rate = await audio_received(emulator, mode)
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0

    template = np.frombuffer(render_earcon("start", rate, config.earcons.volume), "<i2")
    response = chirp_response(audio, template)
    session_zero = pressed - config.audio.preroll_seconds  # what the session's audio starts at
    plain = plain_at - session_zero
    # The plain chirp went through the loop and reached the service...
    assert occurrences(response, rate, FOUND) == [pytest.approx(plain + 0.05, abs=0.1)]
    # ...but the start earcon, played with the press, did not.  (The window starts at
    # the press: the digit in the pre-roll shares part of the chirp's band.)
    press = config.audio.preroll_seconds
    after_press = np.abs(response[round(press * rate) : round((plain - 0.1) * rate)])
    worst = int(np.argmax(after_press))
    assert after_press[worst] < ABSENT, (
        f"{after_press[worst]:.2f} of the earcon at {press + worst / rate:.3f} s "
        f"(press at {press} s)"
    )
    # The digit said just before the press is in the pre-roll, and nothing was lost; in
    # the agent's audio neither its greeting (0) nor its answer (5) came back.
    assert dtmf.decode_digits(audio[: round(press * rate)], rate) == "5"
    assert dtmf.decode_digits(audio, rate) == "5"
    if mode == "agent":
        (record,) = agent_sessions(emulator)
        assert len(record.sent("reply.audio")) > 2  # it did speak, into the microphone
    if mode == "live":
        (account,) = daemon.accounts
        assert account.balanced
