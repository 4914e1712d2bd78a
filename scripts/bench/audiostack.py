"""A private PulseAudio with a ``mic`` and a ``spk`` null sink, and audio always flowing into mic.

The recipe is /work/shared/TESTING.md "Real audio path": PortAudio reaches
the null sinks through ALSA's ``pulse`` plugin, and their clock is real time.
The server runs in its own XDG_RUNTIME_DIR and is stopped by its pid.  The
:class:`MicFeeder` keeps a ``pacat`` playback stream into ``mic`` busy for the
whole benchmark (a looped DTMF-and-noise signal), so every workload captures
real, non-silent audio at real-time pace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from appliance import dtmf

MIC_SINK = "mic"
SPEAKER_SINK = "spk"
MIC_RATE = 48_000
START_TIMEOUT_SECONDS = 10.0
_ASOUNDRC = "pcm.!default { type pulse }\nctl.!default { type pulse }\n"
#: Chunk the feeder writes into pacat; pacat's own buffer paces it.
FEED_CHUNK_SECONDS = 0.05


def test_signal(rate: int = MIC_RATE, seconds: float = 20.0, seed: int = 7) -> np.ndarray:
    """DTMF "speech" (turns of digits with pauses) over low noise: what the mic hears."""
    rng = np.random.default_rng(seed)
    parts = []
    total = 0
    n = int(rate * seconds)
    while total < n:
        digits = "".join(rng.choice(list("0123456789"), size=4))
        part = dtmf.generate(digits, rate, lead_ms=300, trail_ms=700, amplitude=0.4)
        parts.append(part)
        total += len(part)
    speech = np.concatenate(parts)[:n].astype(np.float64)
    noise = rng.normal(0.0, 150.0, n)  # about -47 dBFS of hiss
    return np.clip(np.round(speech + noise), -32768, 32767).astype(np.int16)


class PulseStack:
    """One private pulseaudio daemon; ``env`` is what child processes need to reach it."""

    def __init__(self) -> None:
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="bench-pulse-"))
        os.chmod(self.runtime_dir, 0o700)
        asoundrc = self.runtime_dir / "asoundrc"
        asoundrc.write_text(_ASOUNDRC)
        self.env = dict(os.environ)
        self.env["XDG_RUNTIME_DIR"] = str(self.runtime_dir)
        self.env["ALSA_CONFIG_PATH"] = f"/usr/share/alsa/alsa.conf:{asoundrc}"
        self.pid: int | None = None

    @staticmethod
    def available() -> str | None:
        """Why the stack cannot run here, or None."""
        for tool in ("pulseaudio", "pactl", "pacat"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (scripts/bootstrap.sh installs it)"
        return None

    def start(self) -> PulseStack:
        result = subprocess.run(
            [
                "pulseaudio",
                "-D",
                "-n",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--load=module-native-protocol-unix",
                # As the test fixture: a 48 kHz mono mic, and no rewinds, without which
                # a null sink's monitor can miss the start of a playback stream.
                f"--load=module-null-sink sink_name={MIC_SINK} format=s16le rate={MIC_RATE}"
                " channels=1 norewinds=1",
                f"--load=module-null-sink sink_name={SPEAKER_SINK} norewinds=1",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_SECONDS,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pulseaudio did not start: {result.stderr.strip()}")
        pid_file = self.runtime_dir / "pulse" / "pid"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not pid_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("pulseaudio wrote no pid file")
            time.sleep(0.05)
        self.pid = int(pid_file.read_text().split()[0])
        self.pactl("set-default-source", f"{MIC_SINK}.monitor")
        self.pactl("set-default-sink", SPEAKER_SINK)
        return self

    def pactl(self, *args: str) -> str:
        return subprocess.run(
            ["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10, check=True
        ).stdout

    def stop(self) -> None:
        pid, self.pid = self.pid, None
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


class MicFeeder:
    """Plays ``samples`` into the ``mic`` sink in a loop through one ``pacat`` process."""

    def __init__(self, stack: PulseStack, samples: np.ndarray, rate: int = MIC_RATE) -> None:
        self.stack = stack
        self.data = np.asarray(samples, dtype="<i2").tobytes()
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mic-feeder", daemon=True)
        self.loops = 0

    def start(self) -> MicFeeder:
        self.proc = subprocess.Popen(
            [
                "pacat",
                "--playback",
                f"--device={MIC_SINK}",
                f"--rate={self.rate}",
                "--channels=1",
                "--format=s16le",
                "--raw",
                "--latency-msec=100",
            ],
            stdin=subprocess.PIPE,
            env=self.stack.env,
        )
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        step = int(self.rate * FEED_CHUNK_SECONDS) * 2
        view = memoryview(self.data)
        try:
            while not self._stop.is_set():
                for i in range(0, len(view), step):
                    if self._stop.is_set():
                        return
                    self.proc.stdin.write(view[i : i + step])
                self.loops += 1
        except (BrokenPipeError, ValueError, OSError):
            return

    def stop(self) -> None:
        self._stop.set()
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
