"""The whole daemon: button presses in, sessions against the emulator, systemd told the truth.

The microphone is a paced DTMF WAV (the real PortAudio path is covered by the
audio tests), the cloud the emulator on loopback, systemd a notify socket of
the test's own, and SIGTERM a real signal to a real process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance import dtmf
from appliance.app import Appliance
from appliance.config import Config
from appliance.daemon import Daemon
from appliance.demo import words_to_digits
from appliance.events import EventBus, SessionPhase, TurnFinal
from appliance.secrets import Secret
from tests.events import collect

RATE = 48000
LEAD_S = 1.5


def mic_file(tmp_path: Path, digits: str, lead_s: float = LEAD_S, trail_s: float = 2.0) -> Path:
    path = tmp_path / "mic.wav"
    audio = dtmf.generate(digits, RATE, lead_ms=int(lead_s * 1000), trail_ms=int(trail_s * 1000))
    dtmf.write_wav(path, audio, RATE)
    return path


def daemon_config(tmp_path: Path, emulator, mode: str, mic: Path) -> Config:
    config = Config()
    config.mode = mode
    config.state_dir = tmp_path / "state"
    config.endpoints.base_url = emulator.http_url
    config.audio.source = "file"
    config.audio.input_file = mic
    config.audio.sink = "file"
    config.audio.output_file = tmp_path / "speaker.wav"
    config.button.enabled = False
    config.upload.poll_seconds = 0.1
    config.api_key = Secret(emulator.api_key)
    return config


async def start(config: Config, events: EventBus | None = None) -> tuple[Appliance, asyncio.Task]:
    """An appliance running on ``config``, once it said READY; stop it with ``app.stop()``."""
    app = Appliance(config, events=events)
    runner = asyncio.create_task(app.run())
    await asyncio.wait_for(app.ready.wait(), 20)
    assert app.daemon is not None
    return app, runner


async def press_speak_press(daemon: Daemon, press_at: float = -0.2, stop_at: float = 3.0) -> None:
    """Press ``press_at`` s from when the microphone file starts speaking, press again at
    ``stop_at``, and wait until the session has ended."""
    speech = daemon.ring.time_at(0) + LEAD_S
    await asyncio.sleep(max(0.0, speech + press_at - time.monotonic()))
    daemon.press("short")
    await asyncio.sleep(max(0.0, speech + stop_at - time.monotonic()))
    daemon.press("short")
    await asyncio.wait_for(daemon.wait_idle(), 30)


async def test_press_speak_press_yields_the_digits_and_a_balanced_account(tmp_path, emulator):
    config = daemon_config(tmp_path, emulator, "live", mic_file(tmp_path, "4 7 1"))
    events = EventBus()
    finals, sessions = collect(events, TurnFinal), collect(events, SessionPhase)
    app, runner = await start(config, events)
    await press_speak_press(app.daemon)
    app.stop()
    assert await asyncio.wait_for(runner, 20) == 0

    assert "".join(words_to_digits(e.text) for e in finals) == "471"
    (account,) = app.daemon.accounts
    assert account.balanced and account.spooled_samples == 0
    assert [e.phase for e in sessions] == ["started", "ended"]
    assert sessions[-1].account == account.as_dict()  # the event feed says what the daemon read
    last = app.daemon.status_snapshot()["last_session"]  # and the status page shows it
    assert last["mode"] == "live" and last["lost_seconds"] == 0 == last["spooled_seconds"]
    assert last["captured_seconds"] == last["delivered_seconds"] > 0
    transcripts = list((config.state_path / "transcripts").glob("*.jsonl"))
    assert len(transcripts) == 1 and "four" in transcripts[0].read_text().lower()
    assert emulator.state.token_reuse_attempts == 0


async def test_preroll_keeps_the_word_spoken_before_the_press(tmp_path, emulator):
    """The press comes 0.3 s after the first digit began: the 0.5 s pre-roll still has it."""
    config = daemon_config(tmp_path, emulator, "live", mic_file(tmp_path, "9 2"))
    events = EventBus()
    finals = collect(events, TurnFinal)
    app, runner = await start(config, events)
    await press_speak_press(app.daemon, press_at=0.1)
    app.stop()
    await asyncio.wait_for(runner, 20)
    assert "".join(words_to_digits(e.text) for e in finals) == "92"


async def test_record_mode_uploads_and_transcribes_once(tmp_path, emulator):
    config = daemon_config(tmp_path, emulator, "record", mic_file(tmp_path, "5 8"))
    app, runner = await start(config)
    await press_speak_press(app.daemon, stop_at=2.5)
    spool = app.daemon.components.spool
    deadline = time.monotonic() + 30
    while not (rows := spool.list()) or rows[0].state != "completed":
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.1)
    app.stop()
    await asyncio.wait_for(runner, 20)
    text = spool.artifact_path(rows[0].id, "json").read_text()
    assert words_to_digits(__import__("json").loads(text)["text"]) == "58"
    assert list(emulator.state.submissions_by_hash.values()) == [1]


# ---------------------------------------------------------------- systemd, as a process


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        """Read every message already waiting on the socket."""
        self.sock.setblocking(False)
        try:
            while True:
                try:
                    data = self.sock.recv(4096).decode()
                except BlockingIOError:
                    break
                self.messages.extend(line for line in data.splitlines() if line)
        finally:
            self.sock.settimeout(0.2)
        return self.messages

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if message.startswith(prefix):
                    return message
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.messages.extend(line for line in data.splitlines() if line)
        raise AssertionError(f"no {prefix!r} in {self.messages}")


def write_config(tmp_path: Path, emulator, mode: str, mic: Path) -> Path:
    key = tmp_path / "api-key"
    key.write_text(emulator.api_key)
    key.chmod(0o600)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"mode: {mode}\nstate_dir: {tmp_path / 'state'}\n"
        f"endpoints:\n  base_url: {emulator.http_url}\n"
        f"auth:\n  api_key_file: {key}\n"
        f"audio:\n  source: file\n  input_file: {mic}\n  sink: none\n"
        "button:\n  enabled: false\n  keyboard: true\n"
        "upload:\n  enabled: false\n"
    )
    return path


def test_sigterm_mid_recording_ends_cleanly_with_the_audio_durable(tmp_path, emulator):
    """READY after the mic opens, STATUS follows the state, WATCHDOG pings, and SIGTERM in the
    middle of a recording leaves a valid, durable WAV in the spool and STOPPING=1 sent."""
    notify = NotifySocket(tmp_path / "notify.sock")
    mic = mic_file(tmp_path, "369369", lead_s=0.5, trail_s=5.0)
    config = write_config(tmp_path, emulator, "record", mic)
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "1000000",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        notify.wait_for("READY=1", 30)
        proc.stdin.write("\n")  # Enter = a short press: start recording
        proc.stdin.flush()
        notify.wait_for("STATUS=recording", 10)
        time.sleep(2.5)
        pings_before = sum(m == "WATCHDOG=1" for m in notify.drain())
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    notify.wait_for("STOPPING=1", 1)
    assert pings_before >= 2  # at half of WATCHDOG_USEC while recording

    from appliance.spool import Spool, SpoolParams

    spool = Spool(SpoolParams(tmp_path / "state" / "spool"), owner=False)
    (row,) = spool.list()
    assert row.state == "ready", row  # closed cleanly, not left "recording"
    samples = [dtmf.read_wav(seg)[0] for seg in spool.segments(row.id)]
    heard = dtmf.decode_digits(__import__("numpy").concatenate(samples), RATE)
    assert heard == "369369"  # everything said before SIGTERM is kept


def test_broken_config_never_reports_ready(tmp_path):
    notify = NotifySocket(tmp_path / "notify.sock")
    config = tmp_path / "config.yaml"
    config.write_text("mode: live\nlive:\n  chunk_ms: 3000\n")
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--config", str(config)],
        env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert f"{config}:3: live.chunk_ms" in proc.stderr
    with pytest.raises(AssertionError):
        notify.wait_for("READY=1", 0.5)


async def test_local_page_shows_the_daemon_and_its_controls_need_the_token(tmp_path, emulator):
    import httpx

    token = tmp_path / "control-token"
    token.write_text("page-control-token-0123456789")
    token.chmod(0o600)
    config = daemon_config(tmp_path, emulator, "live", mic_file(tmp_path, "1"))
    config.web.enabled = True
    config.web.port = 0
    config.web.controls_enabled = True
    config.web.control_token_file = token
    app, runner = await start(config)
    daemon = app.daemon
    port = app.web.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as page:
        status = (await page.get("/api/status")).json()
        assert status["mode"] == "live" and status["state"] == "idle"
        assert status["spool"]["waiting"] == 0
        refused = await page.post("/api/control/start_session")
        assert refused.status_code == 401 and daemon.controller.phase.value == "idle"
        accepted = await page.post(
            "/api/control/switch_mode", headers={"Authorization": f"Bearer {token.read_text()}"}
        )
        assert accepted.status_code == 200
    assert daemon.controller.mode == "agent"
    app.stop()
    assert await asyncio.wait_for(runner, 20) == 0


async def test_offline_session_is_kept_and_transcribed_when_the_network_returns(tmp_path, emulator):
    """The network is down for the whole session: nothing is lost, the audio is spooled
    (with the "saved" earcon), and the uploader transcribes it once the network is back."""
    config = daemon_config(tmp_path, emulator, "live", mic_file(tmp_path, "6 2", trail_s=3.0))
    config.audio.history_seconds = 2.0
    config.reconnect.max_seconds = 1.0
    earcons: list[str] = []
    app, runner = await start(config)
    daemon = app.daemon
    played = daemon.play_earcon
    daemon.play_earcon = lambda name: (earcons.append(name), played(name))
    emulator.network_down(60)
    await press_speak_press(daemon, stop_at=4.0)
    (account,) = daemon.accounts
    assert account.balanced and account.streamed_samples == 0 and account.lost_samples == 0
    assert "saved" in earcons
    emulator.network_up()
    deadline = time.monotonic() + 60
    spool = daemon.components.spool
    while not (rows := spool.list()) or any(r.state != "completed" for r in rows):
        assert time.monotonic() < deadline, [(r.state, r.last_error) for r in rows]
        await asyncio.sleep(0.2)
    app.stop()
    await asyncio.wait_for(runner, 20)
    import json

    texts = [
        json.loads(spool.artifact_path(r.id, "json").read_text())["text"]
        for r in sorted(rows, key=lambda r: r.session_offset or 0)
    ]
    assert words_to_digits(" ".join(texts)) == "62"
    assert all(r.session_id for r in rows)


async def test_the_running_daemon_removes_history_older_than_its_retention(tmp_path, emulator):
    config = daemon_config(tmp_path, emulator, "live", mic_file(tmp_path, "1"))
    config.history.retention_days = 1
    old = config.state_path / "transcripts" / "old.jsonl"
    recent = config.state_path / "transcripts" / "recent.jsonl"
    old.parent.mkdir(parents=True, mode=0o700)
    for path in (old, recent):
        path.write_text('{"text": "x"}\n')
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    app, runner = await start(config)
    deadline = time.monotonic() + 10
    while old.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    app.stop()
    assert await asyncio.wait_for(runner, 20) == 0
    assert not old.exists() and recent.exists()
