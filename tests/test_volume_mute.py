"""Volume and mute as a person uses them: gestures, the page over HTTP, a GPIO switch.

The daemon runs whole, against the emulator, with a paced WAV as its
microphone and the WAV file sink as its speaker, so what reached the speaker
is measured sample by sample: each volume change is confirmed by an earcon
whose level is the new gain. The mute switch is a gpiozero mock pin.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx
import numpy as np
import pytest

from appliance import dtmf
from appliance.app import Appliance
from appliance.config import ButtonConfig, Config, VolumeConfig
from appliance.controller import ChangeVolume, Controller, Gesture, MutedPress, ToggleMute
from appliance.controls.earcons import render_earcon
from appliance.controls.volume import ControlsFile, SavedControls, VolumeSteps
from appliance.events import EventBus, MuteChanged, StateChanged, VolumeChanged
from tests.events import collect, wait_for
from tests.test_daemon import daemon_config

RATE = 48_000
SPEAKER_RATE = 24_000
TOKEN = "volume-test-control-token-0123456789"
MUTE_PIN = 27


# ---------------------------------------------------------------- pure parts


def test_volume_steps_stay_within_the_limits_and_the_gain_follows_the_square() -> None:
    steps = VolumeSteps.from_config(VolumeConfig(step_percent=10, minimum_percent=20), 1.5)
    assert steps.stepped(95, 1) == 100
    assert steps.stepped(25, -1) == 20
    assert steps.gain(50) == pytest.approx(1.5 * 0.25)
    assert steps.gain(0) == steps.gain(20)  # below the minimum is the minimum


def test_kept_controls_come_back_and_a_foreign_file_means_the_defaults(tmp_path) -> None:
    kept = ControlsFile(tmp_path)
    default = SavedControls(volume_percent=70)
    assert kept.load(default) == default
    kept.save(SavedControls(volume_percent=40, muted=True))
    assert kept.load(default) == SavedControls(volume_percent=40, muted=True)
    assert [p.name for p in tmp_path.iterdir()] == ["controls.json"]  # no temporary left
    assert not stat.S_IMODE(kept.path.stat().st_mode) & 0o007
    kept.path.write_text('{"volume_percent": 400, "muted": "yes"}')
    assert kept.load(default) == default
    kept.path.write_text("not json")
    assert kept.load(default) == default


def test_gestures_step_the_volume_and_mute_and_a_press_while_muted_starts_nothing() -> None:
    button = ButtonConfig()
    button.live.long = "volume_up"
    button.live.double = "mute"
    controller = Controller(button, "live")
    assert controller.on_gesture(Gesture("long", 0.0)) == [ChangeVolume(1)]
    assert controller.on_gesture(Gesture("double", 0.0)) == [ToggleMute()]
    controller.muted = True
    assert controller.on_gesture(Gesture("short", 0.0)) == [MutedPress("live")]
    assert controller.request_start(0.0) == [MutedPress("live")]
    controller.muted = False
    assert [type(a).__name__ for a in controller.on_gesture(Gesture("short", 0.0))] == [
        "Earcon",
        "StartSession",
    ]


# ---------------------------------------------------------------- the daemon


def device_config(tmp_path: Path, emulator, mic: Path) -> Config:
    config = daemon_config(tmp_path, emulator, "live", mic)
    config.upload.enabled = False
    token = tmp_path / "control-token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    config.web.enabled = True
    config.web.port = 0
    config.web.controls_enabled = True
    config.web.control_token_file = token
    return config


def mic_file(tmp_path: Path, digits: str = "", seconds: float = 12.0) -> Path:
    path = tmp_path / "mic.wav"
    audio = dtmf.generate(digits, RATE, lead_ms=1000, trail_ms=0) if digits else np.zeros(0)
    audio = np.concatenate([audio, np.zeros(int(seconds * RATE) - len(audio))]).astype(np.int16)
    dtmf.write_wav(path, audio, RATE)
    return path


async def start(config: Config, events: EventBus) -> tuple[Appliance, asyncio.Task[int]]:
    app = Appliance(config, events=events)
    runner = asyncio.create_task(app.run())
    await asyncio.wait_for(app.ready.wait(), 20)
    return app, runner


async def control(
    app: Appliance, action: str, token: str = TOKEN, **args: object
) -> httpx.Response:
    assert app.web is not None
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"http://127.0.0.1:{app.web.port}/api/control/{action}",
            params={k: str(v) for k, v in args.items()},
            headers={"Authorization": f"Bearer {token}"},
        )


def bursts(audio: np.ndarray, rate: int, gap_s: float = 0.1) -> list[np.ndarray]:
    """The sounds in ``audio``, split at silences longer than ``gap_s``."""
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 30)
    if not len(loud):
        return []
    splits = np.flatnonzero(np.diff(loud) > gap_s * rate) + 1
    return [audio[group[0] : group[-1] + 1] for group in np.split(loud, splits)]


async def test_the_page_sets_the_volume_each_change_sounds_at_its_level_and_it_is_kept(
    tmp_path, emulator
):
    config = device_config(tmp_path, emulator, mic_file(tmp_path))
    bus = EventBus()
    volumes = collect(bus, VolumeChanged)
    app, runner = await start(config, bus)
    try:
        for action, args in (("set_volume", {"percent": 100}), ("volume_down", {}),
                             ("set_volume", {"percent": 50})):  # fmt: skip
            answer = await control(app, action, **args)
            assert answer.status_code == 200, answer.text
            await asyncio.sleep(0.6)  # each earcon plays out before the next
        assert answer.json()["volume"] == {"percent": 50, "gain": 0.25}
        assert app.daemon is not None
        assert app.daemon.status_snapshot()["volume"]["percent"] == 50
        assert (await control(app, "set_volume", token="wrong", percent=10)).status_code == 401
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0
    assert [(v.percent, v.source) for v in volumes] == [
        (70, "start"), (100, "page"), (90, "page"), (50, "page")
    ]  # fmt: skip

    # The file sink writes what is played, not the idle silence between: earcon after earcon.
    played, rate = dtmf.read_wav(config.audio.output_file)
    template = np.frombuffer(render_earcon("volume", rate, config.earcons.volume), "<i2")
    (sound,) = bursts(played, rate)
    assert len(sound) == pytest.approx(3 * len(template), rel=0.05)
    # Each earcon's steady middle (the fades and the playback's own fade-in left out).
    middles = [s[len(s) // 4 : -len(s) // 4] for s in np.array_split(sound, 3)]
    peaks = [float(np.max(np.abs(s.astype(np.float64)))) for s in middles]
    full = float(np.max(np.abs(template.astype(np.float64))))
    assert peaks == pytest.approx([full, full * 0.81, full * 0.25], rel=0.03)

    # Kept across a restart: the speaker starts at 50 %.
    saved = json.loads((config.state_path / "controls.json").read_text())
    assert saved == {"muted": False, "volume_percent": 50}
    bus = EventBus()
    volumes = collect(bus, VolumeChanged)
    app, runner = await start(config, bus)
    try:
        assert app.daemon is not None and app.daemon.components.speaker is not None
        assert app.daemon.components.speaker.volume == pytest.approx(0.25)
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0
    assert [(v.percent, v.source) for v in volumes] == [(50, "start")]


async def test_the_mute_switch_ends_the_session_at_the_mute_and_a_press_while_muted_is_told(
    tmp_path, emulator, mock_pins
):
    config = device_config(tmp_path, emulator, mic_file(tmp_path, "1 2 3 4 5 6 7 8 9"))
    config.mute.switch = True
    config.mute.pin = MUTE_PIN
    config.mute.bounce_ms = 0
    config.volume.initial_percent = 100  # earcons at full gain: matched filter response 1
    bus = EventBus()
    mutes, states = collect(bus, MuteChanged), collect(bus, StateChanged)
    app, runner = await start(config, bus)
    try:
        daemon = app.daemon
        assert daemon is not None
        switch = mock_pins.pin(MUTE_PIN)
        daemon.press("short")
        await wait_for(lambda: any(s.state == "listening" for s in states), "listening")
        await asyncio.sleep(1.5)
        switch.drive_low()  # the switch closes: muted
        await wait_for(lambda: any(m.muted for m in mutes), "the mute")
        person = daemon.components.person
        assert person is not None and person.muted_from is not None
        muted_at = person.muted_from
        await asyncio.wait_for(daemon.wait_idle(), 15)
        await wait_for(lambda: daemon.ring.write_index > muted_at + RATE // 2, "capture going on")
        daemon.press("short")  # while muted: told, nothing starts
        await wait_for(lambda: states[-1].detail.startswith("muted: unmute"), "the muted notice")
        await asyncio.sleep(0.5)
        assert daemon._session is None
        status = daemon.status_snapshot()
        assert status["mute"]["muted"] is True and status["mute"]["muted_seconds"] > 0.3
        switch.drive_high()  # open again: unmuted
        await wait_for(lambda: not mutes[-1].muted, "the unmute")
        await asyncio.sleep(0.6)  # the "unmuted" earcon plays out
    finally:
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0

    (account,) = [a for a in daemon.accounts if a is not None]
    assert account.stop_reason == "muted"
    assert account.balanced and account.lost_samples == 0
    # The session's audio ends at the mute: what the service got is no longer than that.
    (record,) = emulator.state.streaming_sessions()
    sent_s = len(record.audio()) / record.rate
    session_s = account.captured_samples / account.rate
    assert sent_s <= session_s + 0.06  # the last frame is padded to the service's minimum
    assert [(m.muted, m.source) for m in mutes] == [
        (False, "start"),
        (True, "switch"),
        (False, "switch"),
    ]
    assert mutes[-1].muted_seconds > 0.3
    assert states[-1].state == "idle"
    # The speaker said "muted" twice (the switch, then the press while muted), "unmuted" once.
    played, rate = dtmf.read_wav(config.audio.output_file)
    assert earcon_count(played, rate, "muted", config.earcons.volume) == 2
    assert earcon_count(played, rate, "unmuted", config.earcons.volume) == 1


def earcon_count(audio: np.ndarray, rate: int, name: str, volume: float) -> int:
    """How often earcon ``name`` is in ``audio`` (matched filter, one per 0.3 s)."""
    template = np.frombuffer(render_earcon(name, rate, volume), "<i2").astype(np.float64)
    x = audio.astype(np.float64)
    size = 1 << (len(x) + len(template)).bit_length()
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(template, size)), size)
    response = corr[: len(x)] / float(np.dot(template, template))
    found: list[int] = []
    for i in np.flatnonzero(response > 0.8):
        if not found or i - found[-1] > 0.3 * rate:
            found.append(int(i))
    return len(found)


def test_mqtt_volume_and_mute_commands_become_the_page_controls() -> None:
    from appliance.mqtt.commands import Command, Refused, parse

    assert parse("volume", b"40") == Command("volume", "set_volume", {"percent": "40"})
    assert parse("volume", b"up").action == "volume_up"
    assert isinstance(parse("volume", b"140"), Refused)
    assert parse("mute", b"on").action == "mute"
    assert parse("mute", b"").action == "toggle_mute"
    assert isinstance(parse("mute", b"maybe"), Refused)
