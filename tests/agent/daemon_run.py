"""``appliance run`` in agent mode on a test sound stack: a conversation by Enter and DTMF.

The daemon runs as a process of its own with the stack's environment, the
keyboard as its button and the emulator as the service; DTMF digits are
"spoken" into the microphone every few seconds (the emulator's agent echoes
them) and the speaker's monitor is recorded, so what the speaker really
played can be decoded afterwards.  Used by a short test and, by hand, for
longer runs::

    .venv/bin/python -m tests.agent.daemon_run --stack pulse --seconds 120
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance import dtmf
from tests.fixtures.pulse import STACKS, SoundServer, make_server

CAPTURE_RATE = 48_000
SPEAKER_RATE = 24_000
#: How long the daemon may take from start to an open microphone and speaker.
READY_TIMEOUT_SECONDS = 20.0
#: Between two user turns: the reply (two digits, ~0.5 s) and the turn detection fit.
TURN_SECONDS = 4.0
#: The digits said, one pair per turn, in this order (round and round).
TURNS = ("12", "34", "56", "78", "90", "13", "57", "92")


@dataclass
class Conversation:
    log: str
    said: list[str]
    heard: str  # digits decoded from the speaker's monitor, in order
    returncode: int


def write_config(workdir: Path, base_url: str, api_key: str) -> Path:
    key = workdir / "api-key"
    key.write_text(api_key + "\n")
    key.chmod(0o600)
    config = workdir / "config.yaml"
    config.write_text(
        f"""\
mode: agent
state_dir: {workdir / "state"}
endpoints:
  base_url: {base_url}
auth:
  api_key_file: {key}
audio:
  input_rate: {CAPTURE_RATE}
button:
  enabled: false
  keyboard: true
earcons:
  enabled: false
agent:
  greeting: null
"""
    )
    return config


def converse(
    server: SoundServer, base_url: str, api_key: str, workdir: Path, seconds: float
) -> Conversation:
    """Start the daemon, press Enter, speak a pair of digits every TURN_SECONDS for ``seconds``."""
    config = write_config(workdir, base_url, api_key)
    log_path = workdir / "daemon.log"
    heard_path = workdir / "heard.raw"
    env = dict(server.env, PYTHONUNBUFFERED="1")
    appliance = Path(sys.executable).with_name("appliance")
    said: list[str] = []
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [str(appliance), "run", "--config", str(config)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    assert daemon.stdin is not None
    listener: subprocess.Popen | None = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        # The monitor is recorded only once the speaker is open: a recording stream
        # already on the sink spares a new stream the null sink's start-up pause.
        for mark in (b"playback opened", b"playback running"):
            while mark not in log_path.read_bytes():
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"no {mark.decode()!r} in the log:\n{log_path.read_text()}")
                time.sleep(0.05)
            if listener is None:
                listener = server.record_speaker(heard_path, SPEAKER_RATE)
        daemon.stdin.write(b"\n")  # a short press: the conversation starts
        daemon.stdin.flush()
        time.sleep(2.0)  # connect, session.ready
        end = time.monotonic() + seconds
        turn = 0
        while time.monotonic() < end:
            digits = TURNS[turn % len(TURNS)]
            turn += 1
            audio = dtmf.generate(digits, CAPTURE_RATE, lead_ms=50, trail_ms=50)
            server.play_into_mic(audio, CAPTURE_RATE).wait(timeout=10)
            said.append(digits)
            time.sleep(TURN_SECONDS)
        daemon.stdin.write(b"l\n")  # a long press ends it
        daemon.stdin.flush()
        time.sleep(1.0)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        if listener is not None:
            listener.terminate()
            listener.wait(timeout=5)
    data = heard_path.read_bytes() if heard_path.exists() else b""
    heard = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    return Conversation(
        log=log_path.read_text(errors="replace"),
        said=said,
        heard=dtmf.decode_digits(heard, SPEAKER_RATE),
        returncode=daemon.returncode,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stack", choices=STACKS, default="pulse")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix=f"daemon-run-{args.stack}-"))
    runtime = workdir / "rt"
    runtime.mkdir(mode=0o700)
    server = make_server(args.stack, runtime)
    if server.missing:
        print(server.missing, file=sys.stderr)
        return 4
    key = "k" * 32
    appliance = str(Path(sys.executable).with_name("appliance"))
    emulator = subprocess.Popen(
        [appliance, "emulator", "--port", "0", "--api-key", key, "--data-dir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert emulator.stdout is not None
        line = emulator.stdout.readline()
        url = next(word for word in line.split() if word.startswith("http://"))
        server.start()
        result = converse(server, url.rstrip("/.,"), key, workdir, args.seconds)
    finally:
        server.stop()
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    lost = [line for line in result.log.splitlines() if "playback lost" in line]
    print(f"stack {args.stack}: {len(result.said)} turns said {''.join(result.said)}")
    print(f"heard on the speaker: {result.heard}")
    print(f"'playback lost' lines: {len(lost)}; daemon exit code {result.returncode}")
    for line in result.log.splitlines():
        if "playback" in line or "capture" in line:
            print("  " + line)
    return 0 if not lost else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
