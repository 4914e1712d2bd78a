"""The mute switch ends a voice-agent conversation and a field recording at the mute.

The daemon runs whole against the emulator, with a paced WAV as its
microphone and the WAV file sink as its speaker; the switch is a gpiozero
mock pin. Nothing captured after the mute began may reach the agent (the
emulator keeps every sample it received) or the spool (the recording's own
length), while capture runs on; the muted time is counted apart.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from gpiozero.pins.mock import MockFactory

from appliance import dtmf
from appliance.agent import ConversationAccount
from appliance.app import Appliance
from appliance.config import Config
from appliance.events import EventBus, MuteChanged, StateChanged
from appliance.spool.recorder import RecordingAccount
from appliance.spool.spool import Spool, SpoolParams
from tests.events import collect, wait_for
from tests.test_daemon import daemon_config

RATE = 48_000
AGENT_RATE = 24_000
MUTE_PIN = 27
#: Spoken before the mute, and on well past it (so there is audio a leak would carry).
SPEECH = "1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6"


def device_config(tmp_path: Path, emulator, mode: str) -> Config:
    mic = tmp_path / "mic.wav"
    audio = dtmf.generate(SPEECH, RATE, lead_ms=500, trail_ms=0)
    audio = np.concatenate([audio, np.zeros(max(0, 14 * RATE - len(audio)))]).astype(np.int16)
    dtmf.write_wav(mic, audio, RATE)
    config = daemon_config(tmp_path, emulator, mode, mic)
    config.upload.enabled = False  # the recording stays in the spool, whole
    config.mute.switch = True
    config.mute.pin = MUTE_PIN
    config.mute.bounce_ms = 0
    return config


async def mute_during_a_session(config: Config, pins: MockFactory, busy: str):
    """Start a session, close the switch 1.5 s in, stay muted a while, open it again.

    Returns the daemon, the ring index the mute began at, the mute and state events.
    """
    bus = EventBus()
    mutes, states = collect(bus, MuteChanged), collect(bus, StateChanged)
    app = Appliance(config, events=bus)
    runner = asyncio.create_task(app.run())
    await asyncio.wait_for(app.ready.wait(), 20)
    try:
        daemon = app.daemon
        assert daemon is not None and daemon.components.person is not None
        switch = pins.pin(MUTE_PIN)
        daemon.press("short")
        await wait_for(lambda: any(s.state == busy for s in states), busy)
        await asyncio.sleep(1.5)
        switch.drive_low()  # the switch closes: muted
        await wait_for(lambda: daemon.components.person.muted_from is not None, "the mute")
        muted_at = daemon.components.person.muted_from
        await asyncio.wait_for(daemon.wait_idle(), 15)
        # Capture runs on while muted (the watchdog stays honest): a second more of it.
        await wait_for(lambda: daemon.ring.write_index > muted_at + RATE, "capture going on")
        assert states[-1].state == "muted"
        switch.drive_high()  # open again: unmuted
        await wait_for(lambda: not mutes[-1].muted, "the unmute")
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0
    return daemon, muted_at, mutes


def muted_seconds_are_counted(mutes: list[MuteChanged]) -> None:
    assert [(m.muted, m.source) for m in mutes] == [
        (False, "start"),
        (True, "switch"),
        (False, "switch"),
    ]
    assert mutes[-1].muted_seconds >= 1.0  # at least the second of capture waited for above


async def test_the_mute_switch_ends_a_conversation_and_the_agent_gets_nothing_after_it(
    tmp_path, emulator, mock_pins
):
    config = device_config(tmp_path, emulator, "agent")
    daemon, muted_at, mutes = await mute_during_a_session(config, mock_pins, "listening")

    (account,) = [a for a in daemon.accounts if a is not None]
    assert isinstance(account, ConversationAccount)
    assert account.stop_reason == "muted"
    assert account.balanced and account.lost_samples == 0
    # Sent in whole chunks up to the mute, never past it.
    chunk = RATE * config.agent.chunk_ms // 1000
    assert muted_at - chunk < account.end_index <= muted_at
    (record,) = emulator.state.agent_sessions()
    assert record.rate == AGENT_RATE
    received_s = len(record.audio()) / record.rate
    assert received_s <= (muted_at - account.start_index) / RATE
    # Every sample counted as sent reached the service (the resampler's tail included).
    assert len(record.audio()) * RATE == account.sent_samples * AGENT_RATE
    muted_seconds_are_counted(mutes)


async def test_the_mute_switch_ends_a_recording_and_nothing_after_it_is_spooled(
    tmp_path, emulator, mock_pins
):
    config = device_config(tmp_path, emulator, "record")
    daemon, muted_at, mutes = await mute_during_a_session(config, mock_pins, "recording")

    (account,) = [a for a in daemon.accounts if a is not None]
    assert isinstance(account, RecordingAccount)
    assert account.balanced and account.lost_samples == 0
    assert account.end_index == muted_at  # to the sample
    spool = Spool(SpoolParams.from_config(config), EventBus())  # the daemon's, reopened
    try:
        (row,) = spool.list()  # one recording: the mute started nothing
        assert row.id == account.recording_id
        wav = b"".join(spool.upload_chunks_sync(row.id, row.rate))
    finally:
        spool.close()
    spooled_samples = (len(wav) - 44) // 2
    assert spooled_samples == muted_at - account.start_index == account.samples_written
    muted_seconds_are_counted(mutes)
