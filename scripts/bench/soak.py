"""The session soak: one daemon through N short sessions in every mode, with page clients.

``scripts/bench.py --soak-sessions N`` starts ``appliance run`` once (keyboard
button on stdin, the local page on), and drives it through a fixed cycle of
sessions (:data:`CYCLE`: eight live, one agent conversation, two recordings,
three mode switches, two of them mid-session) while two page clients follow
``/feed``: one stays connected (it tells the driver when a session started and
ended), one reconnects every :data:`RECONNECT_SECONDS`. After every session,
with the daemon idle again, it samples the process: RSS, open fds and threads
(``/proc``), and, through a SIGUSR1 the workload answers (``workloads.py
daemon --stats-file``), its asyncio tasks, the secret registry's size and its
CPU clock (CPU since the previous sample). The report gives first against last
sessions and the growth per 1,000 sessions, and a PNG of RSS against the
session count (matplotlib, the ``bench`` extra).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from appliance.config import MODES

#: The section of BENCHMARKS.md the soak writes.
HEADING = "## Session soak"
#: How long a session runs once it has started: short, the soak counts sessions.
SESSION_SECONDS = {"live": 1.0, "agent": 2.0, "record": 1.0}
#: One cycle: (mode, how the session ends). ``switch`` ends it with the mode-switch
#: gesture while it runs; ``stop+switch`` stops it, then switches while idle.
CYCLE: tuple[tuple[str, str], ...] = (
    *[("live", "stop")] * 7,
    ("live", "switch"),
    ("agent", "stop+switch"),
    ("record", "stop"),
    ("record", "switch"),
)
#: Keyboard button lines (appliance/controls/button.py): short, long and double press.
SHORT, LONG, DOUBLE = "\n", "l\n", "d\n"
#: What each gesture does per mode with the default button settings.
STOP = {"live": SHORT, "agent": LONG, "record": SHORT}
SWITCH_WHILE_RUNNING = {"live": LONG, "record": LONG}
SWITCH_WHILE_IDLE = {"live": LONG, "agent": DOUBLE, "record": LONG}
#: The second page client reconnects this often.
RECONNECT_SECONDS = 10.0
#: A session that does not start or end within this long ends the soak.
EVENT_TIMEOUT_SECONDS = 30.0
#: Idle time after a session before the sample (its tasks and sockets wind down).
SETTLE_SECONDS = 0.3
#: Sessions compared at each end ("the first 100 against the last 100").
COMPARE_SESSIONS = 100
#: How long the daemon may take to answer a stats request.
STATS_TIMEOUT_SECONDS = 2.0


@dataclass
class Sample:
    """The process after one session (index 0: before the first)."""

    session: int
    mode: str
    end: str
    wall_s: float  # the session, press to idle
    rss_mib: float
    fds: int
    threads: int
    tasks: int | None
    cpu_s: float  # since the previous sample
    tokens_registered: int | None
    #: CPU-s of the driver's fixed :func:`machine_speed` loop, taken with the sample: how
    #: slow the machine was then (others' work on the cores, the host's neighbours).
    calibration_s: float = math.nan


@dataclass
class SoakResult:
    sessions: int = 0
    planned: int = 0
    wall_minutes: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    page_reconnects: int = 0
    observer_reconnects: int = 0
    error: str = ""


# ----------------------------------------------------------------------------- the process


#: Rounds of :func:`machine_speed` per sample (the fastest is kept).
CALIBRATION_ROUNDS = 3


def machine_speed() -> float:
    """CPU-s of a fixed pure-Python loop (the fastest of a few), on the driver's own core.

    The same work costs more CPU when the machine is busy (shared caches, memory
    bandwidth, a VM's neighbours): between two 110-session runs five minutes
    apart the daemon's CPU per session differed by 19 % here with nothing changed.
    Dividing by this loop's cost at the same moment takes that out of the
    first-against-last comparison.
    """
    best = math.inf
    for _ in range(CALIBRATION_ROUNDS):
        start = time.process_time()
        total = 0
        for i in range(100_000):
            total += i * i % 7
        best = min(best, time.process_time() - start)
    return best


def proc_sample(pid: int) -> tuple[float, int, int, float]:
    """(RSS MiB, open fds, threads, CPU seconds so far) of ``pid`` from /proc."""
    rss_kib = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return rss_kib / 1024, fds, threads, ticks / os.sysconf("SC_CLK_TCK")


def ask_stats(pid: int, path: Path, seq: int) -> dict[str, Any]:
    """The workload's answer to SIGUSR1 number ``seq`` ({} if it does not come)."""
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + STATS_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            data: dict[str, Any] = json.loads(path.read_text())
            if data.get("seq") == seq:
                return data
        time.sleep(0.01)
    return {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------- page clients


class FeedWatcher:
    """The page client that stays: counts session starts and ends, follows state and mode."""

    def __init__(self, url: str, mode: str) -> None:
        self.url = url
        self.mode = mode
        self.state: str | None = None
        self.started = 0
        self.ended = 0
        self.connections = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ws: Any = None
        self._thread = threading.Thread(target=self._run, name="soak-feed", daemon=True)
        self._thread.start()

    def wait(self, predicate: Any, timeout: float = EVENT_TIMEOUT_SECONDS) -> bool:
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout))

    def close(self) -> None:
        self._stop.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                self._ws.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from websockets.sync.client import connect

        while not self._stop.is_set():
            try:
                with connect(self.url, open_timeout=5) as ws:
                    self._ws = ws
                    with self._cond:
                        self.connections += 1
                        self._cond.notify_all()
                    for raw in ws:
                        self._handle(json.loads(raw))
            except Exception:
                if not self._stop.is_set():
                    time.sleep(0.2)

    def _handle(self, message: dict[str, Any]) -> None:
        kind, data = message.get("kind"), message.get("data") or {}
        with self._cond:
            if kind == "session":
                if data.get("phase") == "started":
                    self.started += 1
                elif data.get("phase") == "ended":
                    self.ended += 1
            elif kind == "state":
                self.state = data.get("state")
                if data.get("mode") in MODES:
                    self.mode = data["mode"]
            self._cond.notify_all()


class ReconnectingPage:
    """A page that reloads every ``period`` seconds: connect, read, close, again."""

    def __init__(self, url: str, period: float = RECONNECT_SECONDS) -> None:
        self.url = url
        self.period = period
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-page", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.period + 5)

    def _run(self) -> None:
        from websockets.sync.client import connect

        while not self._stop.is_set():
            until = time.monotonic() + self.period
            try:
                with connect(self.url, open_timeout=5) as ws:
                    self.connections += 1
                    while not self._stop.is_set() and time.monotonic() < until:
                        with contextlib.suppress(TimeoutError):
                            ws.recv(timeout=0.5)
            except Exception:
                self._stop.wait(0.5)


# ----------------------------------------------------------------------------- the run


def run_sessions(h: Any, n: int) -> SoakResult:
    """Drive one daemon of the harness ``h`` (scripts/bench/runner.py) through ``n`` sessions."""
    from scripts.bench.notify import NotifyListener
    from scripts.bench.runner import READY_TIMEOUT_SECONDS, Variant, workload

    result = SoakResult(planned=n)
    port = free_port()
    stats_file = h.tmp / "soak-stats.json"
    argv = [*workload("daemon"), "--mode", "live", "--sink", "pyaudio"]
    argv += ["--web-port", str(port), "--stats-file", str(stats_file)]
    # The audio trace appends per capture block for as long as the daemon runs: in a soak
    # that is the harness's growth (tracemalloc: 1.5 KiB per session), not the daemon's.
    argv += ["--no-trace"]
    variant = Variant("soak", "ours: `appliance run`, session soak", argv, terminate=True)
    notify = NotifyListener()
    started = time.monotonic()
    proc = h.spawn(variant, h.tmp / "trace-soak.json", notify)
    watcher: FeedWatcher | None = None
    pager: ReconnectingPage | None = None
    try:
        if not notify.ready.wait(READY_TIMEOUT_SECONDS):
            result.error = "no READY=1"
            return result
        feed = f"ws://127.0.0.1:{port}/feed"
        watcher = FeedWatcher(f"{feed}?kinds=session,state", mode="live")
        if not watcher.wait(lambda: watcher.connections > 0, 10.0):
            result.error = "the page feed did not answer"
            return result
        pager = ReconnectingPage(feed)
        time.sleep(1.0)  # a kept token arrives, as it would long before a real press
        _drive(h, proc, watcher, stats_file, n, result)
    finally:
        result.wall_minutes = (time.monotonic() - started) / 60
        if pager is not None:
            pager.close()
            result.page_reconnects = pager.connections
        if watcher is not None:
            watcher.close()
            result.observer_reconnects = max(0, watcher.connections - 1)
        h.finish(proc, terminate=True)
        notify.close()
    if proc.returncode not in (0, None) and not result.error:
        result.error = f"exit code {proc.returncode}"
    return result


def _drive(
    h: Any,
    proc: subprocess.Popen[str],
    watcher: FeedWatcher,
    stats_file: Path,
    n: int,
    result: SoakResult,
) -> None:
    pid = proc.pid
    last_cpu: float | None = None

    def sample(index: int, mode: str, end: str, wall: float) -> None:
        nonlocal last_cpu
        stats = ask_stats(pid, stats_file, index + 1)
        rss, fds, threads, ticks_cpu = proc_sample(pid)
        calibration = machine_speed()
        cpu = float(stats.get("cpu_s", ticks_cpu))  # the process clock when it answers
        if last_cpu is None:
            last_cpu = cpu
        secrets = stats.get("secrets") or {}
        result.samples.append(
            Sample(index, mode, end, wall, rss, fds, threads, stats.get("tasks"),
                   cpu - last_cpu, secrets.get("tokens"), calibration)
        )  # fmt: skip
        last_cpu = cpu

    sample(0, "idle", "", 0.0)
    for i in range(1, n + 1):
        mode, end = CYCLE[(i - 1) % len(CYCLE)]
        if watcher.mode != mode:
            result.error = f"session {i}: the daemon is in {watcher.mode} mode, not {mode}"
            return
        t0 = time.monotonic()
        starts, ends = watcher.started, watcher.ended
        h.press_line(proc, SHORT)
        if not watcher.wait(lambda s=starts: watcher.started > s):
            result.error = f"session {i} ({mode}) did not start"
            return
        time.sleep(SESSION_SECONDS[mode])
        gesture = SWITCH_WHILE_RUNNING[mode] if end == "switch" else STOP[mode]
        h.press_line(proc, gesture)
        if not watcher.wait(lambda e=ends: watcher.ended > e):
            result.error = f"session {i} ({mode}) did not end"
            return
        if end == "stop+switch":
            watcher.wait(lambda: watcher.state == "idle", 5.0)
            h.press_line(proc, SWITCH_WHILE_IDLE[mode])
        if end in ("switch", "stop+switch"):
            following = MODES[(MODES.index(mode) + 1) % len(MODES)]
            if not watcher.wait(lambda f=following: watcher.mode == f):
                result.error = f"after session {i} the mode did not switch to {following}"
                return
        watcher.wait(lambda: watcher.state == "idle", 5.0)
        wall = time.monotonic() - t0
        time.sleep(SETTLE_SECONDS)
        sample(i, mode, end, wall)
        result.sessions = i
        if i % 10 == 0 or i == n:
            s = result.samples[-1]
            print(
                f"[bench] soak {i}/{n}: RSS {s.rss_mib:.1f} MiB, fds {s.fds}, "
                f"threads {s.threads}, tasks {s.tasks}",
                flush=True,
            )


# ----------------------------------------------------------------------------- the report


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def summarise(result: SoakResult) -> dict[str, Any]:
    """First against last sessions, and growth per 1,000 sessions (RSS by a linear fit)."""
    done = [s for s in result.samples if s.session > 0]
    if len(done) < 3:
        return {"sessions": len(done)}
    k = max(1, min(COMPARE_SESSIONS, len(done) // 3))
    first, last = done[:k], done[-k:]
    fit_from = done[k:] if len(done) - k >= 3 else done
    slope = statistics.linear_regression(
        [s.session for s in fit_from], [s.rss_mib for s in fit_from]
    ).slope
    out: dict[str, Any] = {
        "sessions": len(done),
        "window": k,
        "rss_first": _median([s.rss_mib for s in first]),
        "rss_last": _median([s.rss_mib for s in last]),
        "rss_per_1000": slope * 1000,
        "fit_from": fit_from[0].session,
        "modes": {m: sum(1 for s in done if s.mode == m) for m in MODES},
        "switches": sum(1 for s in done if s.end in ("switch", "stop+switch")),
        "mid_session_switches": sum(1 for s in done if s.end == "switch"),
    }
    for name in ("fds", "threads", "tasks", "tokens_registered"):
        values = [getattr(s, name) for s in done if getattr(s, name) is not None]
        if values:
            out[name] = (values[0], values[-1], max(values))
    cpu: dict[str, tuple[float, float, float]] = {}
    steady: dict[str, tuple[float, float, float]] = {}
    for mode in MODES:
        runs = [s for s in done if s.mode == mode]
        if len(runs) >= 2:
            j = max(1, min(k, len(runs) // 3))
            # Medians: one session that met a slow moment of the machine moves a mean.
            a, b = (_median([s.cpu_s for s in part]) for part in (runs[:j], runs[-j:]))
            cpu[mode] = (a, b, _growth(a, b))
            # The same, in units of the machine's speed at the time (machine_speed).
            a, b = (
                _median([s.cpu_s / s.calibration_s for s in part if s.calibration_s > 0])
                for part in (runs[:j], runs[-j:])
            )
            steady[mode] = (a, b, _growth(a, b))
    out["cpu"] = cpu
    out["cpu_per_machine_speed"] = steady
    calibration = [s.calibration_s for s in done if s.calibration_s > 0]
    if calibration:
        out["calibration"] = (_median(calibration[:k]), _median(calibration[-k:]))
    return out


def _growth(first: float, last: float) -> float:
    return (last - first) / first * 100 if first and math.isfinite(first) else math.nan


def plot(result: SoakResult, path: Path) -> str | None:
    """Write the RSS-against-sessions PNG; why not, if it could not be."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is missing (pip install -e '.[bench]')"
    done = result.samples
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot([s.session for s in done], [s.rss_mib for s in done], color="0.6", lw=0.8)
    for mode, colour in zip(MODES, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        points = [s for s in done if s.mode == mode]
        ax.scatter([s.session for s in points], [s.rss_mib for s in points], s=6,
                   color=colour, label=mode)  # fmt: skip
    ax.set_xlabel("sessions")
    ax.set_ylabel("RSS after the session (MiB)")
    ax.set_title(f"appliance run: RSS over {result.sessions} sessions")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


def section(result: SoakResult, summary: dict[str, Any], image: str | None, why: str | None,
            machine: str) -> list[str]:  # fmt: skip
    """The BENCHMARKS.md section, as lines."""
    lines = ["## Session soak", ""]
    lines.append(
        f"`scripts/bench.py --soak-sessions {result.planned}` on {machine}: one `appliance run` "
        f"through {result.sessions} sessions in {result.wall_minutes:.1f} min "
        f"(a cycle of {len(CYCLE)}: 8 live, 1 agent, 2 recordings, 3 mode switches of which 2 "
        "mid-session), with two page clients on `/feed`, one of them reconnecting every "
        f"{RECONNECT_SECONDS:.0f} s ({result.page_reconnects} connections). Sessions last "
        + ", ".join(f"{m} {s:.0f} s" for m, s in SESSION_SECONDS.items())
        + " after they start; each sample is taken idle, after the session."
    )
    if result.error:
        lines += ["", f"Stopped early: {result.error}."]
    if summary.get("sessions", 0) < 3:
        return [*lines, "", "Too few sessions to summarise."]
    k = summary["window"]
    lines += [
        "",
        f"| measure | first {k} | last {k} | growth per 1,000 sessions |",
        "|---|---|---|---|",
        f"| RSS (median, MiB) | {summary['rss_first']:.1f} | {summary['rss_last']:.1f} | "
        f"{summary['rss_per_1000']:+.1f} MiB (linear fit from session {summary['fit_from']}) |",
    ]
    for name, label in (("fds", "open fds"), ("threads", "threads"), ("tasks", "asyncio tasks"),
                        ("tokens_registered", "tokens registered for redaction")):  # fmt: skip
        if name in summary:
            a, b, top = summary[name]
            lines.append(f"| {label} (first, last; max) | {a} | {b} | max {top} |")
    for mode, (a, b, pct) in summary["cpu"].items():
        lines.append(
            f"| CPU per {mode} session and idle gap (median CPU-s) | {a:.4f} | {b:.4f} "
            f"| {pct:+.1f} % |"
        )
    for mode, (a, b, pct) in summary.get("cpu_per_machine_speed", {}).items():
        if math.isfinite(pct):
            lines.append(
                f"| CPU per {mode} session in machine-speed units (median) | {a:.2f} | {b:.2f} "
                f"| {pct:+.1f} % |"
            )
    if "calibration" in summary:
        a, b = summary["calibration"]
        lines += [
            "",
            "The machine-speed unit is the CPU one fixed pure-Python loop took in the "
            f"driver, measured with each sample (median {a * 1000:.1f} ms over the first "
            f"sessions, {b * 1000:.1f} ms over the last): the same work costs more CPU "
            "while other work shares the cores, so the raw rows mix the daemon's growth "
            "with the machine's load at the time.",
        ]
    modes = ", ".join(f"{m} {c}" for m, c in summary["modes"].items())
    lines += ["", f"Sessions by mode: {modes}; {summary['switches']} mode switches."]
    if image:
        lines += ["", f"![RSS against sessions]({image})"]
    elif why:
        lines += ["", f"No plot: {why}."]
    return lines


def save_samples(result: SoakResult, path: Path) -> None:
    path.write_text(json.dumps([asdict(s) for s in result.samples]))
