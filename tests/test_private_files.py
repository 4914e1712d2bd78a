"""What the daemon writes is its user's alone (files 0600, directories 0700), whoever starts it.

Under systemd the unit's ``UMask=0077`` covers it; here ``appliance run`` is started
by hand from a shell with the usual lax umask (022), runs a live session against
the emulator, and everything it left in its state directory, and its speaker file, is checked.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from tests.test_daemon import NotifySocket, mic_file

SHELL_UMASK = 0o022


def write_config(tmp_path: Path, emulator, mic: Path) -> Path:
    """Live mode, with the speaker a WAV file: the one file nothing but the umask guards."""
    key = tmp_path / "api-key"
    key.write_text(emulator.api_key)
    key.chmod(0o600)
    state = tmp_path / "state"
    path = tmp_path / "config.yaml"
    path.write_text(
        f"mode: live\nstate_dir: {state}\n"
        f"endpoints:\n  base_url: {emulator.http_url}\n"
        f"auth:\n  api_key_file: {key}\n"
        f"audio:\n  source: file\n  input_file: {mic}\n"
        f"  sink: file\n  output_file: {tmp_path / 'speaker.wav'}\n"
        "button:\n  enabled: false\n  keyboard: true\n"
        "upload:\n  enabled: false\n"
    )
    return path


def test_a_live_session_started_by_hand_leaves_only_private_files(tmp_path, emulator):
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path, emulator, mic_file(tmp_path, "2 5", lead_s=0.5))
    state = tmp_path / "state"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "PYTHONUNBUFFERED": "1"}
    for name in ("WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        umask=SHELL_UMASK,
    )
    try:
        notify.wait_for("READY=1", 30)
        proc.stdin.write("\n")  # Enter = a short press: start a live session
        proc.stdin.flush()
        deadline = time.monotonic() + 20
        while not any(p.stat().st_size for p in state.glob("transcripts/*.jsonl")):
            assert time.monotonic() < deadline, "no transcript was written"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output

    written = [state, *state.rglob("*"), tmp_path / "speaker.wav"]
    modes = {p: stat.S_IMODE(p.lstat().st_mode) for p in written}
    assert {".jsonl", ".wav", ".sqlite3"} <= {p.suffix for p in modes}
    loose = {
        str(p.relative_to(tmp_path)): f"{mode:04o}"
        for p, mode in modes.items()
        if mode != (0o700 if p.is_dir() else 0o600)
    }
    assert loose == {}, f"not private: {loose}"
