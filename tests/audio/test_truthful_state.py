"""The state and the meter tell the truth, in every mode, on the real audio path.

The whole daemon runs on the PulseAudio test stack (PortAudio -> ALSA ->
null sinks) against the emulator. DTMF "speech" is played into the
microphone; the state events must go through what really happens (connecting
only until the service took the session, listening while it does, offline
only while a dropped connection waits, and back), and the ``level`` events
must be published without MQTT, at a bounded rate, loud while the digits
play and at the floor in the silence of the null sink.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import dtmf
from appliance.app import Appliance
from appliance.config import Config
from appliance.events import Event, EventBus, MicLevel, Published, StateChanged
from appliance.secrets import Secret

pytestmark = pytest.mark.audio

CAPTURE_RATE = 48_000
SPEECH_S = 2.0
#: A DTMF digit at the generator's level is far above this; the null sink's silence far below.
SPEECH_DBFS = -30.0
SILENCE_DBFS = -90.0


def device_config(tmp_path: Path, emulator, mode: str) -> Config:
    config = Config()
    config.mode = mode
    config.state_dir = tmp_path / "state"
    config.endpoints.base_url = emulator.http_url
    config.audio.input_rate = CAPTURE_RATE
    config.button.enabled = False
    config.earcons.enabled = False
    config.upload.enabled = False
    config.api_key = Secret(emulator.api_key)
    return config


class Timeline:
    """Every state and level event, with when it was published."""

    def __init__(self, bus: EventBus) -> None:
        self.states: list[StateChanged] = []
        self.levels: list[tuple[float, float]] = []
        bus.add_callback(self._keep)

    def _keep(self, published: Published[Event]) -> None:
        event = published.event
        if isinstance(event, StateChanged):
            self.states.append(event)
        elif isinstance(event, MicLevel):
            self.levels.append((time.monotonic(), event.dbfs))

    def names(self, mode: str) -> list[str]:
        """The states of ``mode``, repeats of the same state folded."""
        out: list[str] = []
        for s in self.states:
            if s.mode == mode and (not out or out[-1] != s.state):
                out.append(s.state)
        return out

    def levels_between(self, start: float, end: float) -> list[float]:
        return [dbfs for at, dbfs in self.levels if start <= at <= end]


async def wait_for(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["live", "agent", "record"])
async def test_states_follow_the_session_and_the_meter_follows_the_voice(
    tmp_path, emulator, pulse_server, mode
):
    config = device_config(tmp_path, emulator, mode)
    bus = EventBus()
    timeline = Timeline(bus)
    app = Appliance(config, events=bus)
    runner = asyncio.create_task(app.run())
    try:
        await asyncio.wait_for(app.ready.wait(), 20)
        daemon = app.daemon
        assert daemon is not None
        await asyncio.sleep(1.0)  # silence before anything is said
        quiet_until = time.monotonic()
        daemon.press("short")
        busy = {"live": "listening", "agent": "listening", "record": "recording"}[mode]
        await wait_for(lambda: busy in timeline.names(mode), f"{busy} in {mode}")
        speech = dtmf.generate("1 2 3 4", CAPTURE_RATE, lead_ms=0, trail_ms=0)
        speaking_from = time.monotonic()
        # pacat takes the audio at real-time pace: writing it blocks, so off the loop.
        player = await asyncio.to_thread(pulse_server.play_into_mic, speech, CAPTURE_RATE)
        assert await asyncio.to_thread(player.wait, 20) == 0
        speaking_until = speaking_from + len(speech) / CAPTURE_RATE
        if mode == "live":
            # A dropped connection: offline while the reconnect waits, connecting, listening.
            listening_before = timeline.names(mode).count("listening")
            emulator.drop()
            await wait_for(
                lambda: timeline.names(mode).count("listening") > listening_before,
                "listening again after the drop",
            )
        daemon.press("long" if mode == "agent" else "short")
        await asyncio.wait_for(daemon.wait_idle(), 30)
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0

    names = timeline.names(mode)
    if mode == "live":
        assert names == [
            "idle", "connecting", "listening", "offline", "connecting", "listening", "idle"
        ]  # fmt: skip
    elif mode == "agent":
        # The agent greets and may answer; it is never "connecting" once it has begun.
        assert names[:3] == ["idle", "connecting", "listening"], names
        assert set(names[3:-1]) <= {"listening", "agent_speaking"}, names
        assert names[-1] == "idle"
    else:
        assert names == ["idle", "recording", "idle"]

    # The meter: published with MQTT off, loud while the digits play, silent before.
    assert not config.mqtt.enabled
    speaking = timeline.levels_between(speaking_from + 0.5, speaking_until - 0.3)
    assert speaking and max(speaking) > SPEECH_DBFS, speaking
    silent = timeline.levels_between(quiet_until - 0.8, quiet_until)
    assert silent and max(silent) < SILENCE_DBFS, silent
    # Bounded: one per interval at most (coalesced), whatever the capture block size.
    first, last = timeline.levels[0][0], timeline.levels[-1][0]
    allowed = (last - first) / config.audio.level_interval_seconds + 2
    assert len(timeline.levels) <= allowed
    assert np.all(np.diff([at for at, _ in timeline.levels]) > 0)
