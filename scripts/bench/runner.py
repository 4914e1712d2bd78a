"""Run every benchmark and write BENCHMARKS.md (entry point: scripts/bench.py).

One private PulseAudio (null sinks ``mic`` and ``spk``, audio looping into
``mic`` the whole time) and one emulator on loopback serve every run.  Each
workload runs as its own process; its CPU and memory come from the kernel's
accounting of that process tree (scripts/bench/measure.py), its latencies from
the emulator's receive times (time.monotonic() is one clock for every process
on the machine).  Variants alternate (A B C A B C ...) and figures are medians.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from appliance.audio.resample import AGENT_RATE
from appliance.config import CAPTURE_BLOCK_MS_BY_MODE, AudioConfig, LiveConfig
from appliance.protocol.policy import DEFAULT_RECONNECT_LIMITS
from scripts.bench.audiostack import MicFeeder, PulseStack, test_signal
from scripts.bench.findings import FINDINGS
from scripts.bench.measure import RssSampler, Window, machine_info, median, percentile
from scripts.bench.notify import NotifyListener
from scripts.bench.report import write_section

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
#: The daemon's capture block in live transcription and recording (and idle, as the
#: bench's daemon starts in live): its floor is a bare capture with the same block.
OUR_BLOCK_MS = CAPTURE_BLOCK_MS_BY_MODE["live"]
#: The voice agent's capture block (it has a floor of its own when the blocks differ).
AGENT_BLOCK_MS = CAPTURE_BLOCK_MS_BY_MODE["agent"]
#: The audio in one live frame (``live.chunk_ms``): the yardsticks send frames of it too.
LIVE_CHUNK_MS = LiveConfig().chunk_ms
#: The agent's speaker as the daemon opens it (the spk sink takes 24 kHz as it is):
#: its floor is a bare output stream of the same rate and block, fed silence.
SPEAKER_RATE = AGENT_RATE
SPEAKER_BLOCK_MS = AudioConfig().output_block_ms
#: The agent is also measured with this speaker block (the CPU-first choice).
ALT_SPEAKER_BLOCK_MS = 40
#: The SDK pipeline reads 100 ms at a time.
SDK_BLOCK_MS = 100


def floor_key(block_ms: int) -> str:
    """The capture floor row for a block size: ``floor`` for ours, ``floor<ms>`` else."""
    return "floor" if block_ms == OUR_BLOCK_MS else f"floor{block_ms}"


SDK_FLOOR = floor_key(SDK_BLOCK_MS)
AGENT_FLOOR = floor_key(AGENT_BLOCK_MS)
#: The reconnect experiment's drops are this far apart: past the reconnect policy's
#: ``healthy_after_seconds``, so each is a single drop, as a device meets one.
DROP_SPACING_SECONDS = DEFAULT_RECONNECT_LIMITS.healthy_after_seconds + 1.0
#: How long a workload may take from spawn to READY=1 before the run is abandoned.
READY_TIMEOUT_SECONDS = 20.0
#: Idle target: CPU-s per minute above the capture floor with no session.
IDLE_ABOVE_FLOOR_LIMIT = 0.1
#: Time after the press before CPU is counted (connection set-up, first turn).
WARMUP_SECONDS = 2.0
#: Presses and drops per latency experiment.
LATENCY_TRIALS_QUICK = 2
LATENCY_TRIALS_FULL = 8
#: Wait after a press or a drop for audio to reach the emulator.
FIRST_AUDIO_TIMEOUT_SECONDS = 10.0


# ----------------------------------------------------------------------------- workloads


@dataclass
class Variant:
    """One program under test: how to start it and what it is called in the report."""

    key: str
    label: str
    argv: list[str]
    streams: bool = True  # does a press start a streaming session?
    trace_kind: str = "none"  # how capture->send latency is derived: sdk | ring | none
    terminate: bool = False  # needs SIGTERM to stop (the daemon), not just end of stdin
    floor: str | None = None  # the bare capture at this variant's block size, subtracted
    full_alsa: bool = False  # the system's whole ALSA plugin set, not just pulse (see the notes)

    def command(self, http_url: str, api_key: str, trace: Path) -> list[str]:
        return [
            *self.argv,
            "--http-url",
            http_url,
            "--api-key",
            api_key,
            "--trace",
            str(trace),
        ]


def workload(name: str, *extra: str) -> list[str]:
    return [PYTHON, "-m", "scripts.bench.workloads", name, *extra]


def variants(
    patches: list[str] | None = None, file_source: Path | None = None
) -> dict[str, Variant]:
    table = {
        **capture_floors(),
        **playback_floors(),
        **idle_variants(file_source),
        "transport": Variant(
            "transport",
            f"yardstick: PyAudio callback ({OUR_BLOCK_MS} ms) -> asyncio -> websockets, "
            f"{LIVE_CHUNK_MS} ms frames (live's), nothing else",
            workload(
                "transport", "--block-ms", str(OUR_BLOCK_MS), "--chunk-ms", str(LIVE_CHUNK_MS)
            ),
            floor="floor",
        ),
        "transport-thread": Variant(
            "transport-thread",
            f"yardstick: PyAudio callback ({OUR_BLOCK_MS} ms) -> sender thread -> websockets' "
            f"sync client, {LIVE_CHUNK_MS} ms frames, nothing else",
            workload(
                "transport-thread",
                "--block-ms",
                str(OUR_BLOCK_MS),
                "--chunk-ms",
                str(LIVE_CHUNK_MS),
            ),
            floor="floor",
        ),
        "sdk": Variant(
            "sdk",
            "SDK pipeline: PyAudio 100 ms reads + audioop + StreamingClient",
            workload("sdk"),
            trace_kind="sdk",
            floor=SDK_FLOOR,
        ),
        "live": Variant(
            "live",
            "ours: live transcription (AudioCapture + LiveTranscriber)",
            workload("live", "--prefetch", "--block-ms", str(OUR_BLOCK_MS)),
            trace_kind="ring",
            floor="floor",
        ),
    }
    daemon = workload("daemon")
    table["d-live"] = Variant(
        "d-live",
        "ours: `appliance run`, live transcription, 48 kHz mic",
        [*daemon, "--mode", "live"],
        trace_kind="ring",
        terminate=True,
        floor="floor",
    )
    if file_source is not None:
        table["d-live-file"] = Variant(
            "d-live-file",
            "ours: `appliance run`, live transcription, paced file source",
            [*daemon, "--mode", "live", "--input-file", str(file_source)],
            terminate=True,
        )
    table["d-agent"] = Variant(
        "d-agent",
        f"ours: `appliance run`, voice agent (speaker: null sink, {SPEAKER_BLOCK_MS} ms blocks)",
        [*daemon, "--mode", "agent"],
        streams=True,
        terminate=True,
        floor=f"{AGENT_FLOOR}+floor-playback",
    )
    table["d-record"] = Variant(
        "d-record",
        "ours: `appliance run`, recording to the spool",
        [*daemon, "--mode", "record"],
        terminate=True,
        floor="floor",
    )
    table["d-agent-alt"] = Variant(
        "d-agent-alt",
        f"ours: `appliance run`, voice agent, CPU first: {OUR_BLOCK_MS} ms capture blocks, "
        f"{ALT_SPEAKER_BLOCK_MS} ms speaker blocks (`audio.block_ms`, `audio.output_block_ms`)",
        [
            *daemon,
            "--mode",
            "agent",
            "--capture-block-ms",
            str(OUR_BLOCK_MS),
            "--output-block-ms",
            str(ALT_SPEAKER_BLOCK_MS),
        ],
        streams=True,
        terminate=True,
        floor="floor+floor-playback-alt",
    )
    # The same floor and live run with Debian's libasound2-plugins set loaded (the recipe
    # in TESTING.md): what the device-like rows above leave out.
    table["floor-full"] = Variant(
        "floor-full",
        f"floor, {OUR_BLOCK_MS} ms blocks, with the system's whole ALSA plugin set",
        workload("floor", "--block-ms", str(OUR_BLOCK_MS)),
        streams=False,
        full_alsa=True,
    )
    table["d-live-full"] = Variant(
        "d-live-full",
        "ours: `appliance run`, live, 48 kHz mic, with the system's whole ALSA plugin set",
        [*daemon, "--mode", "live"],
        terminate=True,
        floor="floor-full",
        full_alsa=True,
    )
    for spec in patches or []:
        table[f"live+{spec}"] = Variant(
            f"live+{spec}",
            f"ours, live, trying `{spec}`",
            workload("live", "--prefetch", "--patch", spec),
            trace_kind="ring",
        )
    return table


def capture_floors() -> dict[str, Variant]:
    """A bare PyAudio capture at each block size a row above is held against."""
    whose: dict[int, list[str]] = {}
    for block, who in (
        (OUR_BLOCK_MS, "live and recording"),
        (AGENT_BLOCK_MS, "the agent"),
        (SDK_BLOCK_MS, "the SDK pipeline"),
    ):
        whose.setdefault(block, []).append(who)
    return {
        floor_key(block): Variant(
            floor_key(block),
            f"floor: bare PyAudio callback, 48 kHz, {block} ms blocks ({', '.join(who)})",
            workload("floor", "--block-ms", str(block)),
            streams=False,
        )
        for block, who in whose.items()
    }


def playback_floors() -> dict[str, Variant]:
    """A bare output stream fed silence at each speaker block the agent is measured with."""
    table = {}
    for key, block, what in (
        ("floor-playback", SPEAKER_BLOCK_MS, "the agent's speaker"),
        ("floor-playback-alt", ALT_SPEAKER_BLOCK_MS, "the agent's other speaker row"),
    ):
        table[key] = Variant(
            key,
            f"playback floor: bare PyAudio output callback fed silence, "
            f"{SPEAKER_RATE // 1000} kHz, {block} ms blocks ({what})",
            workload("playback-floor", "--rate", str(SPEAKER_RATE), "--block-ms", str(block)),
            streams=False,
        )
    return table


def idle_variants(file_source: Path | None) -> dict[str, Variant]:
    """The daemon with no session: capture into the ring, the page served, no one pressing.

    A device spends most of its life here, so these rows sit next to the capture
    floor they are held against.  The page is enabled but no client is connected.
    """
    port = str(free_port())
    daemon = [*workload("daemon"), "--mode", "live", "--web-port", port, "--no-trace"]
    table = {
        "d-idle": Variant(
            "d-idle",
            "ours: `appliance run`, idle (no session), 48 kHz mic, page enabled",
            daemon,
            streams=False,
            terminate=True,
            floor="floor",
        ),
        # What a device with earcons or the agent has too: the speaker is kept warm,
        # playing silence between sounds (appliance/audio/playback.py).
        "d-idle-speaker": Variant(
            "d-idle-speaker",
            "ours: `appliance run`, idle (no session), 48 kHz mic, page enabled, "
            "warm speaker (`audio.sink: pyaudio`)",
            [*daemon, "--sink", "pyaudio"],
            streams=False,
            terminate=True,
            floor="floor",
        ),
    }
    if file_source is not None:
        table["d-idle-file"] = Variant(
            "d-idle-file",
            "ours: `appliance run`, idle (no session), paced file source, page enabled",
            [*daemon, "--input-file", str(file_source)],
            streams=False,
            terminate=True,
        )
    return table


def free_port() -> int:
    """A loopback port free now (the page's; a run binds it again a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- one run


@dataclass
class RunResult:
    variant: str
    ready_s: float = math.nan
    cpu_per_min: float = math.nan
    window_s: float = 0.0
    rss_peak_mb: float = math.nan
    rss_steady_mb: float = math.nan
    trace: dict[str, Any] = field(default_factory=dict)
    sessions: list[Any] = field(default_factory=list)  # emulator SessionRecords
    send_latencies_ms: list[float] = field(default_factory=list)
    reply_ms: list[float] = field(default_factory=list)
    flush_ms: list[float] = field(default_factory=list)
    error: str = ""


class Harness:
    """The shared audio stack and emulator, and how a workload is run against them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stack: PulseStack | None = None
        self.feeder: MicFeeder | None = None
        self.emu: Any = None
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-"))
        self.log = open(self.tmp / "workloads.log", "ab")  # noqa: SIM115 - closed in stop()

    def start(self) -> None:
        from appliance.emulator.config import EmulatorConfig
        from appliance.emulator.server import EmulatorThread

        self.stack = PulseStack().start()
        self.feeder = MicFeeder(self.stack, test_signal()).start()
        self.emu = EmulatorThread(EmulatorConfig(port=0, save_session_audio=False)).start()
        from appliance import dtmf

        self.file_source = self.tmp / "mic.wav"
        dtmf.write_wav(self.file_source, test_signal(seconds=60.0), 48_000)

    def stop(self) -> None:
        if self.emu is not None:
            self.emu.stop()
        if self.feeder is not None:
            self.feeder.stop()
        if self.stack is not None:
            self.stack.stop()
        self.log.close()

    @property
    def api_key(self) -> str:
        return self.emu.api_key

    def spawn(
        self,
        variant: Variant,
        trace: Path,
        notify: NotifyListener,
        cpus: set[int] | None = None,
        before_exec: Callable[[], None] | None = None,
    ) -> subprocess.Popen[str]:
        """Start a workload; ``before_exec`` runs in the child first (joining a cgroup)."""
        assert self.stack is not None
        env = dict(self.stack.env, NOTIFY_SOCKET=notify.path, PYTHONPATH=str(ROOT))
        if variant.full_alsa:
            env["ALSA_CONFIG_PATH"] = self.stack.full_alsa_config_path

        def pin() -> None:
            if before_exec is not None:
                before_exec()
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        return subprocess.Popen(
            variant.command(self.emu.http_url, self.api_key, trace),
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=self.log,
            text=True,
            preexec_fn=pin,
        )

    @staticmethod
    def press(proc: subprocess.Popen[str]) -> float:
        """A button press (a line on stdin); returns its time.monotonic()."""
        assert proc.stdin is not None
        t = time.monotonic()
        proc.stdin.write("\n")
        proc.stdin.flush()
        return t

    @staticmethod
    def press_line(proc: subprocess.Popen[str], line: str) -> None:
        """One keyboard-button line: Enter (short), ``l`` (long) or ``d`` (double)."""
        assert proc.stdin is not None
        proc.stdin.write(line)
        proc.stdin.flush()

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 30.0, terminate: bool = False) -> None:
        """End of stdin (and SIGTERM for the daemon) ends the workload; killed if it hangs."""
        with contextlib.suppress(BrokenPipeError, OSError):
            assert proc.stdin is not None
            proc.stdin.close()
        if terminate and proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def new_sessions(self, since: int, kind: str = "streaming") -> list[Any]:
        return [s for s in self.emu.state.sessions[since:] if s.kind == kind]

    def wait_first_audio(self, since: int, after: float, timeout: float) -> float | None:
        """Time (monotonic) of the first binary frame after ``after`` in a session opened
        since index ``since``; None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for s in self.new_sessions(since):
                for m in list(s.messages):
                    if m.direction == "in" and m.kind == "binary" and m.t >= after:
                        return m.t
            time.sleep(0.005)
        return None

    # ------------------------------------------------------------------ CPU / memory run

    def cpu_run(self, variant: Variant, seconds: float, cpus: set[int] | None = None) -> RunResult:
        result = RunResult(variant.key)
        trace = self.tmp / f"trace-{variant.key}-{time.monotonic_ns()}.json"
        notify = NotifyListener()
        since = len(self.emu.state.sessions)
        t_spawn = time.monotonic()
        proc = self.spawn(variant, trace, notify, cpus)
        try:
            if not notify.ready.wait(READY_TIMEOUT_SECONDS):
                result.error = "no READY=1"
                return result
            result.ready_s = (notify.ready_at or math.nan) - t_spawn
            time.sleep(0.5)
            if variant.streams:
                self.press(proc)
            time.sleep(WARMUP_SECONDS)
            window = Window(proc.pid)
            rss = RssSampler(proc.pid).start()
            window.begin()
            time.sleep(seconds)
            window.end()
            rss.stop()
            result.cpu_per_min = window.cpu_per_audio_minute
            result.window_s = window.seconds
            result.rss_peak_mb = rss.peak_kib / 1024
            result.rss_steady_mb = rss.steady_kib() / 1024
            window_range = (window.t0, window.t0 + window.seconds)
        finally:
            self.finish(proc, terminate=variant.terminate)
            notify.close()
        with contextlib.suppress(OSError, ValueError):
            result.trace = json.loads(trace.read_text())
        result.sessions = self.new_sessions(since)
        if proc.returncode not in (0, None):
            result.error = f"exit code {proc.returncode}"
        result.send_latencies_ms = send_latencies(variant, result, window_range)
        agent_sessions = self.new_sessions(since, "agent")
        result.reply_ms, result.flush_ms = agent_latencies(result, agent_sessions)
        return result


# ----------------------------------------------------------------------------- latency math


def _binary_frames(session: Any) -> list[tuple[float, int]]:
    """(receive time, bytes) of each audio frame a session received, in order."""
    return [(m.t, int(m.payload)) for m in session.messages if m.kind == "binary"]


def send_latencies(variant: Variant, result: RunResult, window: tuple[float, float]) -> list[float]:
    """Capture -> WebSocket send (arrival at the emulator), ms, for frames inside ``window``.

    SDK pipeline: the k-th frame a session received is the k-th 100 ms chunk it
    read, and the trace holds the time each read returned.  Ours: the ring's
    workload logs each capture callback (ring write index after it, time), so
    the frame's end (its cumulative 16 kHz sample count mapped back to a capture
    index) finds the callback that delivered that sample.
    """
    lo, hi = window
    out: list[float] = []
    if variant.trace_kind == "sdk":
        reads = [s["reads"] for s in result.trace.get("sessions", [])]
        for session, times in zip(result.sessions, reads, strict=False):
            for (t_recv, _), t_read in zip(_binary_frames(session), times, strict=False):
                if lo <= t_recv <= hi:
                    out.append((t_recv - t_read) * 1000)
    elif variant.trace_kind == "ring":
        rate = result.trace.get("rate")
        traced = result.trace.get("sessions", [])
        callbacks = result.trace.get("callbacks", [])
        if not rate or not traced or not callbacks:
            return out
        ends = [c[0] for c in callbacks]
        # One press per run, so one ring session; later connections of it (reconnects)
        # resend from the last confirmed point, so only the first is mapped.
        start = traced[0]["start_index"]
        sent = 0
        frames = _binary_frames(result.sessions[0]) if result.sessions else []
        for t_recv, nbytes in frames:
            sent += nbytes // 2
            last = start + math.ceil(sent * rate / 16000) - 1
            i = bisect.bisect_right(ends, last)  # first callback whose block holds `last`
            if i < len(callbacks) and lo <= t_recv <= hi:
                out.append((t_recv - callbacks[i][1]) * 1000)
    return out


def agent_latencies(result: RunResult, sessions: list[Any]) -> tuple[list[float], list[float]]:
    """Voice agent: reply audio -> playback, and barge-in -> speaker flushed, ms.

    Reply: the emulator's first ``reply.audio`` of each reply to the first
    playback callback that starts playing after it (includes the jitter
    buffer); a reply the speaker was flushed of before it started (the user
    spoke over it at once) never plays and is left out, or the next reply's
    start would be charged to it.  Barge-in: each ``reply.done`` (interrupted) to the first flush
    after the speech start that caused it (from the speech start when the
    daemon flushed before the emulator's interruption arrived).
    """
    playing = result.trace.get("playing", [])
    flushes = result.trace.get("flushes", [])
    firsts: dict[Any, float] = {}
    triggers: list[tuple[str, float]] = []
    for session in sessions:
        for m in session.messages:
            if m.direction != "out" or m.kind != "json" or not isinstance(m.payload, dict):
                continue
            kind = m.payload.get("type")
            if kind == "reply.audio":
                firsts.setdefault((session.id, m.payload.get("reply_id")), m.t)
            elif kind == "input.speech.started":
                triggers.append(("start", m.t))
            elif kind == "reply.done" and m.payload.get("status") == "interrupted":
                triggers.append(("interrupted", m.t))
    reply = []
    for t_sent in sorted(firsts.values()):
        i = bisect.bisect_right(playing, t_sent)
        if i < len(playing) and playing[i] - t_sent < 2.0:
            j = bisect.bisect_right(flushes, t_sent)
            if j < len(flushes) and flushes[j] < playing[i]:
                continue  # flushed before it played: the start is the next reply's
            reply.append((playing[i] - t_sent) * 1000)
    starts = sorted(t for kind, t in triggers if kind == "start")
    flush = []
    for t_int in sorted(t for kind, t in triggers if kind == "interrupted"):
        i = bisect.bisect_right(starts, t_int)
        t_start = starts[i - 1] if i else t_int
        j = bisect.bisect_left(flushes, t_start)
        if j < len(flushes) and flushes[j] - t_int < 1.0:
            t_flush = flushes[j]
            flush.append((t_flush - (t_int if t_flush >= t_int else t_start)) * 1000)
    return reply, flush


# ----------------------------------------------------------------------------- experiments


def cpu_experiment(
    h: Harness, table: dict[str, Variant], keys: list[str], reps: int, seconds: float
) -> dict[str, list]:
    runs: dict[str, list[RunResult]] = {k: [] for k in keys}
    for rep in range(reps):
        for key in keys:
            print(f"[bench] cpu {key} run {rep + 1}/{reps} ({seconds:.0f} s)", flush=True)
            r = h.cpu_run(table[key], seconds)
            if r.error:
                print(f"[bench]   {key}: {r.error}", flush=True)
            else:
                print(
                    f"[bench]   {key}: {r.cpu_per_min:.2f} CPU-s/min, "
                    f"RSS {r.rss_steady_mb:.1f}/{r.rss_peak_mb:.1f} MB, ready {r.ready_s:.2f} s",
                    flush=True,
                )
            runs[key].append(r)
    return runs


def press_experiment(h: Harness, variant: Variant, trials: int) -> list[float]:
    """Press -> first audio byte at the emulator, ms, ``trials`` presses in one process."""
    notify = NotifyListener()
    trace = h.tmp / f"trace-press-{variant.key}-{time.monotonic_ns()}.json"
    proc = h.spawn(variant, trace, notify)
    out: list[float] = []
    try:
        if not notify.ready.wait(READY_TIMEOUT_SECONDS):
            return out
        time.sleep(1.5)  # let a prefetched token arrive, as it would long before a real press
        for _ in range(trials):
            since = len(h.emu.state.sessions)
            t_press = h.press(proc)
            t_first = h.wait_first_audio(since, t_press, FIRST_AUDIO_TIMEOUT_SECONDS)
            if t_first is not None:
                out.append((t_first - t_press) * 1000)
            time.sleep(0.5)
            h.press(proc)  # stop
            time.sleep(1.5)
    finally:
        h.finish(proc, terminate=variant.terminate)
        notify.close()
    return out


def reconnect_experiment(h: Harness, variant: Variant, trials: int) -> list[float]:
    """Emulator ``drop`` (TCP reset, no close frame) -> first audio byte on the new connection."""
    notify = NotifyListener()
    trace = h.tmp / f"trace-reconnect-{variant.key}-{time.monotonic_ns()}.json"
    proc = h.spawn(variant, trace, notify)
    out: list[float] = []
    try:
        if not notify.ready.wait(READY_TIMEOUT_SECONDS):
            return out
        time.sleep(0.5)
        since = len(h.emu.state.sessions)
        h.press(proc)
        if h.wait_first_audio(since, 0.0, FIRST_AUDIO_TIMEOUT_SECONDS) is None:
            return out
        for _ in range(trials):
            # Each drop after the connection has counted as healthy: a drop sooner than
            # that is the policy's second in a row, which backs off by design (a server
            # dropping every connection gets one quick reconnect, not a cascade).
            time.sleep(DROP_SPACING_SECONDS)
            since = len(h.emu.state.sessions)
            t_drop = time.monotonic()
            h.emu.drop(kind="streaming")
            t_first = h.wait_first_audio(since, t_drop, FIRST_AUDIO_TIMEOUT_SECONDS)
            if t_first is not None:
                out.append((t_first - t_drop) * 1000)
    finally:
        h.finish(proc, terminate=variant.terminate)
        notify.close()
    return out


def soak_experiment(h: Harness, variant: Variant, seconds: float) -> dict[str, Any]:
    """A long run pinned to core 0 with a busy loop pinned to core 1."""
    cpus = sorted(os.sched_getaffinity(0))
    busy = None
    pin_to: set[int] | None = None
    if len(cpus) >= 2:
        pin_to = {cpus[0]}
        busy = subprocess.Popen(
            [PYTHON, "-c", "while True: pass"],
            preexec_fn=lambda: os.sched_setaffinity(0, {cpus[1]}),
        )
    try:
        r = h.cpu_run(variant, seconds, cpus=pin_to)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    received = sum(sum(c.size for c in s.audio_chunks) / s.rate for s in r.sessions)
    return {
        "variant": variant.key,
        "seconds": r.window_s,
        "overflows": r.trace.get("overflows"),
        "cpu_per_min": r.cpu_per_min,
        "received_s": received,
        "connections": len(r.sessions),
        "account": r.trace.get("account"),
        "loaded_core": cpus[1] if len(cpus) >= 2 else None,
        "error": r.error,
    }


# ----------------------------------------------------------------------------- report


def fmt(value: float, digits: int = 2) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def summarise(runs: dict[str, list[RunResult]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, rs in runs.items():
        ok = [r for r in rs if not r.error]
        lat = [x for r in ok for x in r.send_latencies_ms]
        out[key] = {
            "runs": len(ok),
            "cpu": median([r.cpu_per_min for r in ok]),
            "cpu_all": [r.cpu_per_min for r in ok],
            "rss_peak": median([r.rss_peak_mb for r in ok]),
            "rss_steady": median([r.rss_steady_mb for r in ok]),
            "ready": median([r.ready_s for r in ok]),
            "overflows": sum(int(r.trace.get("overflows") or 0) for r in ok),
            "send_p50": percentile(lat, 50),
            "send_p99": percentile(lat, 99),
            "send_n": len(lat),
            "underruns": sum(int(r.trace.get("underruns") or 0) for r in ok),
            "reply": [x for r in ok for x in r.reply_ms],
            "flush": [x for r in ok for x in r.flush_ms],
        }
    return out


def write_report(path: Path, ctx: dict[str, Any]) -> None:
    s = ctx["summary"]
    labels = ctx["labels"]
    floors = ctx["floors"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `.venv/bin/python scripts/bench.py"
        + (" --quick" if ctx["quick"] else "")
        + f"` on {ctx['date']} ({ctx['wall_minutes']:.1f} min). Do not edit by hand.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in ctx["machine"].items()]
    lines += [
        "",
        "## Method",
        "",
        "- Audio: a private PulseAudio, null sink `mic` (48 kHz) whose monitor is the default "
        "source; `pacat` plays looped DTMF turns over noise into it for the whole run. "
        "Cloud: the project's emulator on 127.0.0.1 in the harness process.",
        f"- Each CPU run: spawn, wait for READY=1, press, {WARMUP_SECONDS:.0f} s warm-up, then "
        f"{ctx['seconds']:.0f} s measured. CPU is user+system of the whole process tree from "
        f"/proc/<pid>/stat; RSS from /proc/<pid>/status (peak = VmHWM, steady = median of the "
        f"later half of 0.5 s samples). Variants alternate, {ctx['reps']} run(s) each; "
        f"figures are medians.",
        "- Capture -> send: arrival time of each audio frame at the emulator minus when the "
        "capture delivered the frame's last sample (SDK: when its 100 ms read returned; "
        "ours: the ring's clock mapping, callback time of the block holding that sample).",
        "- Above floor: a variant's CPU minus a bare PyAudio capture with the same block size "
        f"(ours {OUR_BLOCK_MS} ms in live and recording, {AGENT_BLOCK_MS} ms in the agent, "
        f"as `audio.block_ms` defaults by mode; the SDK pipeline {SDK_BLOCK_MS} ms), i.e. the "
        "work each does with the "
        "audio beyond the ALSA pulse plugin's own cost; the paced-file row has no audio stack. "
        "The voice agent's rows subtract the playback floor too (its speaker stays open).",
        "",
        "## CPU and memory",
        "",
        "| variant | CPU-s per audio min | above floor | runs (each) | steady RSS MB "
        "| peak RSS MB | start -> READY=1 s | overflows | underruns |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in s.items():
        above = above_floor(s, key, floors)
        each = ", ".join(fmt(x) for x in row["cpu_all"])
        lines.append(
            f"| {labels.get(key, key)} | {fmt(row['cpu'])} | {fmt(above)} | {each} "
            f"| {fmt(row['rss_steady'], 1)} | {fmt(row['rss_peak'], 1)} | {fmt(row['ready'])} "
            f"| {row['overflows']} | {row['underruns']} |"
        )
    lines += ["", "## Latency", "", "| what | ours | SDK pipeline |", "|---|---|---|"]
    live, sdk = s.get("d-live", {}), s.get("sdk", {})
    lines.append(
        f"| capture -> WebSocket send, p50 / p99 ms (frames) | "
        f"{fmt(live.get('send_p50'), 1)} / {fmt(live.get('send_p99'), 1)} ({live.get('send_n')}) | "
        f"{fmt(sdk.get('send_p50'), 1)} / {fmt(sdk.get('send_p99'), 1)} ({sdk.get('send_n')}) |"
    )
    lat = ctx["latency"]

    def cell(xs: list[float]) -> str:
        if not xs:
            return "n/a"
        return f"median {median(xs):.0f}, max {max(xs):.0f} (n={len(xs)})"

    lines.append(
        "| press -> first audio byte, pre-minted token, ms "
        f"| {cell(lat.get('press_live_prefetch', []))} "
        f"| n/a (the SDK cannot mint over plain HTTP; see notes) |"
    )
    lines.append(
        f"| press -> first audio byte, token minted at the press (SDK: API key), ms "
        f"| {cell(lat.get('press_live_mint', []))} | {cell(lat.get('press_sdk', []))} |"
    )
    lines.append(
        f"| reconnect after `drop` -> first audio byte, ms | {cell(lat.get('reconnect_live', []))} "
        f"| {cell(lat.get('reconnect_sdk', []))} |"
    )
    agent_rows = [
        (variant, name, key)
        for variant, suffix in (
            ("d-agent", ""),
            (
                "d-agent-alt",
                f" (CPU first: {OUR_BLOCK_MS} ms capture, {ALT_SPEAKER_BLOCK_MS} ms speaker)",
            ),
        )
        if variant in s
        for name, key in (
            (
                f"voice agent{suffix}: first `reply.audio` sent -> playback starts playing, ms",
                "reply",
            ),
            (
                f"voice agent{suffix}: barge-in (speech start or interrupted) -> speaker flushed, "
                "ms",
                "flush",
            ),
        )
    ]
    for variant, name, key in agent_rows:
        xs = s[variant].get(key, [])
        if xs:
            text = (
                f"p50 {percentile(xs, 50):.1f}, p99 {percentile(xs, 99):.1f}, "
                f"max {max(xs):.1f} (n={len(xs)})"
            )
        else:
            text = "n/a"
        lines.append(f"| {name} | {text} | n/a (no agent in the SDK's streaming client) |")
    lines += ["", "## Ours / SDK pipeline", ""]
    sdk_above = above_floor(s, "sdk", floors)
    live_above = above_floor(s, "d-live", floors)
    lines.append(
        f"- CPU above each one's floor (same capture block): {fmt(live_above)} / "
        f"{fmt(sdk_above)} = {fmt(live_above / sdk_above if sdk_above else math.nan)}"
    )
    if SDK_FLOOR != "floor":
        sdk_floor = s.get(SDK_FLOOR, {}).get("cpu", math.nan)
        lines.append(
            f"- CPU above the SDK's {SDK_BLOCK_MS} ms floor (charges ours for its block): "
            f"{fmt(live.get('cpu', math.nan) - sdk_floor)} / "
            f"{fmt(sdk.get('cpu', math.nan) - sdk_floor)}"
        )
    if "transport" in s:
        yardstick = above_floor(s, "transport", floors)
        where = "below" if yardstick > sdk_above / 2 else "above"
        lines.append(
            f"- The yardstick (capture -> asyncio -> websockets, nothing else) above its floor: "
            f"{fmt(yardstick)}, what Python, asyncio and websockets alone cost at this frame "
            f"rate; the target's limit ({fmt(sdk_above / 2)}) sits {where} it"
        )
    lines.append(
        f"- Total CPU: {fmt(live.get('cpu'))} / {fmt(sdk.get('cpu'))} = "
        f"{fmt(live.get('cpu', math.nan) / sdk.get('cpu', math.nan))}"
    )
    lines.append(
        f"- Steady RSS: {fmt(live.get('rss_steady'), 1)} / {fmt(sdk.get('rss_steady'), 1)} = "
        f"{fmt(live.get('rss_steady', math.nan) / sdk.get('rss_steady', math.nan))}"
    )
    lines.append(
        f"- Capture -> send p50: {fmt(live.get('send_p50'), 1)} / "
        f"{fmt(sdk.get('send_p50'), 1)} = "
        f"{fmt(live.get('send_p50', math.nan) / sdk.get('send_p50', math.nan))}"
    )
    soak = ctx.get("soak")
    lines += ["", "## Loaded soak", ""]
    if soak:
        lines.append(
            f"- {soak['variant']}: {soak['seconds'] / 60:.1f} min pinned to one core with a busy "
            f"loop on core {soak['loaded_core']}: overflows {soak['overflows']}, "
            f"{fmt(soak['cpu_per_min'])} CPU-s/min, audio received {soak['received_s']:.1f} s over "
            f"{soak['connections']} connection(s)"
            + (f", error: {soak['error']}" if soak["error"] else "")
        )
    else:
        lines.append("- not run (pass `--soak`).")
    lines += ["", "## Targets", "", "| target | figure | met |", "|---|---|---|"]
    for row in ctx["targets"]:
        lines.append(f"| {row.name} | {row.figure} | {row.met} |")
    lines += [
        "",
        "Start-up to READY=1 (<= 0.4 s) and the Pi-class budget are measured by their own "
        "runs (`--startup`, `--budget`): their sections above give the figures and verdicts.",
    ]
    missed = [row for row in ctx["targets"] if row.met == "NO" and row.key in FINDINGS]
    if missed:
        lines += ["", "## Targets missed", ""]
        lines.append(
            "For each: what was tried, its measured effect (paired runs; the A/B figures are "
            "in the commit messages) and where the limit lies. docs/performance.md has the "
            "detail."
        )
        for row in missed:
            lines += ["", f"### {row.name}", "", *FINDINGS[row.key]]
    if ctx.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in ctx["notes"]]
    kept = other_sections(path.read_text() if path.exists() else "", lines)
    path.write_text("\n".join(lines) + "\n")
    for heading, body in kept:
        write_section(path, body, heading)


def other_sections(old: str, ours: list[str]) -> list[tuple[str, list[str]]]:
    """The sections of an older report that other runs wrote (soak, budget, start-up, the
    broker's and MQTT's): a full run rewrites its own and keeps theirs."""
    own = {line for line in ours if line.startswith("## ")} | {"## Targets missed"}
    kept: list[tuple[str, list[str]]] = []
    heading: str | None = None
    body: list[str] = []
    for line in [*old.splitlines(), "## end"]:
        if line.startswith("## "):
            if heading is not None and heading not in own and heading != "## end":
                while body and not body[-1]:
                    body.pop()
                kept.append((heading, body))
            heading, body = line, [line]
        elif heading is not None:
            body.append(line)
    return kept


def above_floor(summary: dict, key: str, floors: dict[str, str | None]) -> float:
    """A variant's CPU minus the bare capture at its own block size (nan if it has none).

    ``a+b``: both floors (the agent's capture and its speaker)."""
    floor = floors.get(key)
    parts = floor.split("+") if floor else []
    if not parts or key not in summary or any(p not in summary for p in parts):
        return math.nan
    return summary[key]["cpu"] - sum(summary[p]["cpu"] for p in parts)


class Target(NamedTuple):
    """One row of the report's targets table; ``key`` names its entry in FINDINGS."""

    name: str
    figure: str
    met: str
    key: str = ""


#: Round two's targets (the performance issue), each a named limit.
LIVE_TO_SDK_LIMIT = 0.7
AGENT_CPU_LIMIT = 1.0  # CPU-s per audio minute
RECORD_CPU_LIMIT = 0.4
STEADY_RSS_LIMIT_MB = 50.0
FILE_SOURCE_CPU_LIMIT = 0.6  # 1 % of one core


def targets(
    summary: dict,
    lat: dict,
    soak: dict | None,
    floors: dict[str, str | None],
    full_alsa: dict[str, bool],
) -> list[Target]:
    def verdict(value: float, limit: float) -> str:
        if value is None or math.isnan(value):
            return "not measured"
        return "yes" if value <= limit else "NO"

    def cpu(key: str) -> float:
        return summary.get(key, {}).get("cpu", math.nan)

    live, sdk = cpu("d-live"), cpu("sdk")
    ratio = live / sdk if sdk and not math.isnan(sdk) else math.nan
    rows = [
        Target(
            f"live transcription, 48 kHz mic: total CPU <= {LIVE_TO_SDK_LIMIT}x the SDK "
            "pipeline's, same run",
            f"{fmt(live)} / {fmt(sdk)} = {fmt(ratio)}x",
            verdict(ratio, LIVE_TO_SDK_LIMIT),
            "live",
        ),
        Target(
            f"voice agent <= {AGENT_CPU_LIMIT:.1f} CPU-s per audio min",
            f"{fmt(cpu('d-agent'))} ({fmt(above_floor(summary, 'd-agent', floors))} above "
            "the capture and playback floors)",
            verdict(cpu("d-agent"), AGENT_CPU_LIMIT),
            "agent",
        ),
        Target(
            f"recording to the spool <= {RECORD_CPU_LIMIT} CPU-s per audio min",
            f"{fmt(cpu('d-record'))} CPU-s/min",
            verdict(cpu("d-record"), RECORD_CPU_LIMIT),
            "record",
        ),
    ]
    idle_above = above_floor(summary, "d-idle", floors)
    rows.append(
        Target(
            f"idle (mic, page enabled) <= capture floor + {IDLE_ABOVE_FLOOR_LIMIT} CPU-s/min",
            f"{fmt(idle_above)} above floor",
            verdict(idle_above, IDLE_ABOVE_FLOOR_LIMIT),
            "idle",
        )
    )
    steady = {
        key: row.get("rss_steady", math.nan)
        for key, row in summary.items()
        if key.startswith("d-") and not full_alsa.get(key, False)
    }
    worst_key = max(steady, key=lambda k: steady[k]) if steady else ""
    worst = steady.get(worst_key, math.nan)
    rows.append(
        Target(
            f"steady RSS <= {STEADY_RSS_LIMIT_MB:.0f} MB in every mode (device's ALSA plugins)",
            f"worst {fmt(worst, 1)} MB ({worst_key or 'none'})",
            verdict(worst, STEADY_RSS_LIMIT_MB),
            "rss",
        )
    )
    file_cpu = cpu("d-live-file")
    rows.append(
        Target(
            f"live with the paced file source <= 1% of one core ({FILE_SOURCE_CPU_LIMIT} "
            "CPU-s/min)",
            f"{fmt(file_cpu)} CPU-s/min",
            verdict(file_cpu, FILE_SOURCE_CPU_LIMIT),
        )
    )
    press = lat.get("press_live_prefetch", [])
    pm = median(press) if press else math.nan
    rows.append(
        Target(
            "press -> first audio byte <= 150 ms (pre-minted)", f"{fmt(pm, 0)} ms", verdict(pm, 150)
        )
    )
    flushes = summary.get("d-agent", {}).get("flush", [])
    fm = percentile(flushes, 99)
    rows.append(Target("barge-in flush <= 30 ms (p99)", f"{fmt(fm, 1)} ms", verdict(fm, 30)))
    rc = lat.get("reconnect_live", [])
    rm = max(rc) if rc else math.nan
    rows.append(
        Target(
            "reconnect <= 1 s on loopback (worst)",
            f"{fmt(rm, 0)} ms",
            verdict(rm, 1000),
            "reconnect",
        )
    )
    if soak:
        ov = soak.get("overflows")
        rows.append(
            Target(
                "zero overflows in the loaded 10-minute run", str(ov), "yes" if ov == 0 else "NO"
            )
        )
    return rows


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py", description="Measure every mode against the obvious alternative."
    )
    parser.add_argument("--quick", action="store_true", help="short runs, one of each (~2 min)")
    parser.add_argument("--minutes", type=float, default=None, help="measured minutes per run")
    parser.add_argument("--reps", type=int, default=None, help="runs of each variant")
    parser.add_argument("--soak", action="store_true", help="add the 10-minute loaded run")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--soak-sessions",
        type=int,
        metavar="N",
        help="only the session soak: one daemon through N sessions in every mode; "
        "writes its section of --output and the plot --soak-plot",
    )
    parser.add_argument("--soak-plot", type=Path, default=ROOT / "docs" / "soak-rss.png")
    parser.add_argument(
        "--budget",
        action="store_true",
        help="only the Pi-class budget: each mode and the SDK pipeline on 10%% of one core "
        "and 128 MB (cgroups, needs root); writes its section of --output",
    )
    parser.add_argument("--budget-minutes", type=float, default=10.0, metavar="N")
    parser.add_argument(
        "--startup",
        action="store_true",
        help="only start-up: process start to READY=1 per mode, RSS and the import profile; "
        "writes its section of --output",
    )
    parser.add_argument("--startup-runs", type=int, default=7, metavar="N")
    parser.add_argument(
        "--try",
        dest="patches",
        action="append",
        default=[],
        metavar="PATCHES",
        help="also measure ours with proposed changes, e.g. quality=VHQ (repeatable)",
    )
    parser.add_argument(
        "--variants", help="comma-separated CPU variants to run (default: all but the driver)"
    )
    parser.add_argument(
        "--only-cpu", action="store_true", help="skip the latency experiments (profiling aid)"
    )
    args = parser.parse_args(argv)
    seconds = 60 * (args.minutes if args.minutes is not None else (0.25 if args.quick else 1.0))
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    trials = LATENCY_TRIALS_QUICK if args.quick else LATENCY_TRIALS_FULL

    why = PulseStack.available()
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 4
    if args.soak_sessions:
        return session_soak(args)
    if args.budget:
        from scripts.bench import budget

        return budget.main(args)
    if args.startup:
        from scripts.bench import startup

        return startup.main(args)
    started = time.monotonic()
    h = Harness(args)
    notes: list[str] = [
        "SDK on loopback: `StreamingClientOptions(api_host='ws://127.0.0.1:PORT')` is used "
        "as given (the SDK prefixes `wss://` only to a bare host), so no TLS shim is needed; "
        "it authenticates with the API key in `Authorization`. Its `create_temporary_token` "
        "always uses `https://`, so the SDK's pre-minted-token path cannot run on loopback.",
        "Ours is `appliance run` with a generated config (keyboard button on stdin, earcons "
        "off, agent `echo: full_duplex`, speaker = the `spk` null sink). The workload wrapper "
        "(scripts/bench/workloads.py) adds class-level wrappers that append (index, time) to a "
        "list per capture/playback callback and per flush: no appliance code is edited.",
        "Press and reconnect latencies use a driver wired like the daemon "
        "(`workloads.py live`, with and without the token coordinator's kept token).",
        "The yardstick row is not a product: it decimates by dropping samples and has no "
        "ring, resume, spool or turn handling; it shows the cost of the transport alone "
        "(`workloads.py transport`). The sender-thread yardstick is the same with the event "
        "loop taken out: the capture thread wakes a sender thread that sends over websockets' "
        "sync client (`workloads.py transport-thread`); the two rows side by side are what "
        "moving the audio path off the loop could save.",
        "The audio stack's ALSA configuration loads only the pulse plugin, as a device has "
        "no other; the `whole ALSA plugin set` rows use the system's (Debian's "
        "libasound2-plugins: PortAudio's device scan then maps libavcodec and a dozen codec "
        "libraries into every process). The workloads block importing trio, which only the "
        "dev extra's selenium installs and httpcore imports whenever present.",
        "The `trying` rows run that driver with proposed changes patched in at run time "
        "(`--try`); compare them with the daemon rows only roughly (the driver has no spool, "
        "uploader, watchdog or button).",
    ]
    try:
        h.start()
        table = variants(args.patches, h.file_source)
        keys = args.variants.split(",") if args.variants else [k for k in table if k != "live"]
        runs = cpu_experiment(h, table, keys, reps, seconds)
        lat: dict[str, list[float]] = {}
        soak = None
        if not args.only_cpu:
            print("[bench] press -> first audio byte", flush=True)
            lat["press_live_prefetch"] = press_experiment(h, table["live"], trials)
            minting = Variant("live-mint", "ours, no prefetch", workload("live"))
            lat["press_live_mint"] = press_experiment(h, minting, trials)
            lat["press_sdk"] = press_experiment(h, table["sdk"], trials)
            print("[bench] reconnect after drop", flush=True)
            lat["reconnect_live"] = reconnect_experiment(h, table["live"], trials)
            lat["reconnect_sdk"] = reconnect_experiment(h, table["sdk"], trials)
        if args.soak:
            print(f"[bench] loaded soak ({args.soak_minutes:.0f} min)", flush=True)
            soak = soak_experiment(h, table["live"], args.soak_minutes * 60)
        summary = summarise(runs)
        floors = {k: v.floor for k, v in table.items()}
    finally:
        h.stop()
    ctx = {
        "quick": args.quick,
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "wall_minutes": (time.monotonic() - started) / 60,
        "machine": machine_info(),
        "seconds": seconds,
        "reps": reps,
        "summary": summary,
        "latency": lat,
        "soak": soak,
        "targets": targets(summary, lat, soak, floors, {k: v.full_alsa for k, v in table.items()}),
        "floors": floors,
        "notes": notes,
        "labels": {k: v.label for k, v in table.items()},
    }
    write_report(args.output, ctx)
    print(f"[bench] wrote {args.output} in {ctx['wall_minutes']:.1f} min", flush=True)
    return 0


def session_soak(args: argparse.Namespace) -> int:
    """``--soak-sessions N``: the soak alone, its section of the report and its plot."""
    from scripts.bench import soak

    why = PulseStack.available()
    if why:
        print(f"bench: {why}", file=sys.stderr)
        return 4
    h = Harness(args)
    try:
        h.start()
        print(f"[bench] session soak: {args.soak_sessions} sessions", flush=True)
        result = soak.run_sessions(h, args.soak_sessions)
    finally:
        h.stop()
    samples = h.tmp / "soak-samples.json"
    soak.save_samples(result, samples)
    why = soak.plot(result, args.soak_plot) if result.samples else "no samples"
    image = None if why else os.path.relpath(args.soak_plot, args.output.parent)
    info = machine_info()
    machine = f"{info.get('cpu', 'this machine')}, {info.get('cores', '?')} cores"
    summary = soak.summarise(result)
    write_section(args.output, soak.section(result, summary, image, why, machine), soak.HEADING)
    print(f"[bench] wrote the soak section of {args.output}; samples in {samples}", flush=True)
    if result.error:
        print(f"[bench] soak stopped early: {result.error}", file=sys.stderr)
        return 1
    return 0
