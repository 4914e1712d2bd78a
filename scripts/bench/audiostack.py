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
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from appliance import dtmf
from tests.fixtures.pulse import MIC_SINK, PulseServer

MIC_RATE = 48_000  # the test mic sink's rate (tests/fixtures/pulse.py MIC_SINK_SPEC)
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


class PulseStack(PulseServer):
    """The test suite's private pulseaudio (tests/fixtures/pulse.py), in a directory of its own.

    The same null sinks as the tests (48 kHz mono ``mic``, no rewinds), so the
    benchmark measures the audio path the tests prove correct.
    """

    def __init__(self) -> None:
        runtime_dir = Path(tempfile.mkdtemp(prefix="bench-pulse-"))
        os.chmod(runtime_dir, 0o700)
        super().__init__(runtime_dir)

    @staticmethod
    def available() -> str | None:
        """Why the stack cannot run here, or None."""
        for tool in ("pulseaudio", "pactl", "pacat"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed (scripts/bootstrap.sh installs it)"
        return None

    def start(self) -> PulseStack:
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
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
