"""The Pi-class budget: each mode, and the SDK pipeline, on a tenth of one core and 128 MB.

``scripts/bench.py --budget [--budget-minutes N]`` runs every workload of
:data:`BUDGET_VARIANTS` once for N minutes inside its own cgroups
(scripts/bench/cgroup.py): a CFS quota of 10% of one core and a memory limit.
Only the measured process joins them; the harness, the emulator (strict
pacing, its defaults) and the sound server run outside.  Each row shows
what a starved device would show: capture overflows, playback underruns,
the emulator's pacing and chunk-duration violations and close codes, and
whether every digit the microphone heard reached the cloud, in order
(:func:`check_digits`).  The section replaces its old self in BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance import dtmf
from scripts.bench.cgroup import Budget, BudgetStats, Limits
from scripts.bench.report import write_section

#: What runs under the budget, in order: the daemon's three modes and the SDK pipeline.
BUDGET_VARIANTS = ("d-live", "d-agent", "d-record", "sdk")
#: Start-up on a tenth of a core takes ten times as long: READY=1 may come late.
BUDGET_READY_TIMEOUT_SECONDS = 120.0
#: After a recording stops, how long its upload may take on the budget.
UPLOAD_TIMEOUT_SECONDS = 600.0
#: How often the machine's load average is sampled during a run.
LOAD_SAMPLE_SECONDS = 5.0
#: Digits of the received audio matched against what was played, at each end.
ANCHOR_DIGITS = 6
#: Keyboard-button line that ends each mode's session (appliance/controls/button.py).
STOP_LINE = {"d-record": "\n"}
HEADING = "## Pi-class budget"


# ----------------------------------------------------------------------------- digits


def digit_cycle(signal: np.ndarray, rate: int) -> str:
    """The digits a looped ``signal`` plays in one period, in order (seams included)."""
    period = len(signal) / rate
    events = dtmf.decode(np.tile(signal, 3), rate)
    return "".join(e.digit for e in events if period <= e.start_s < 2 * period)


@dataclass(frozen=True)
class DigitCheck:
    """Received digits against the played sequence over the same stretch."""

    decoded: int
    missing: int  # played inside the stretch, not received
    extra: int  # received, never played there
    anchored: bool  # both ends were found in the played sequence

    @property
    def ok(self) -> bool:
        return self.anchored and self.missing == 0 and self.extra == 0 and self.decoded > 0


def check_digits(received: str, cycle: str) -> DigitCheck:
    """Every digit of ``received`` (a stretch of the looped ``cycle``) present, in order.

    The first and last digit may be cut by the start and end of the stretch,
    so they are left out.  The stretch starts where its first
    :data:`ANCHOR_DIGITS` digits occur in the cycle; what was played from
    there (up to a whole cycle more than arrived, trimmed after the last
    digit that matched) is compared with what arrived.
    """
    core = received[1:-1]
    n = len(core)
    if not cycle or n < 2 * ANCHOR_DIGITS:
        return DigitCheck(n, 0, 0, False)
    played = cycle * (n // len(cycle) + 3)
    head = played.find(core[:ANCHOR_DIGITS])
    if head < 0 or head >= len(cycle):
        return DigitCheck(n, 0, 0, False)
    expected = played[head : head + n + len(cycle)]
    # The longest common subsequence of what arrived with each prefix of what was played
    # (a greedy matcher slips by whole laps on a periodic sequence); the prefix that
    # needs the fewest digits lost plus gained is the stretch that was played.
    row = [0] * (len(expected) + 1)
    for digit in core:
        diagonal = 0
        for j, want in enumerate(expected, 1):
            above = row[j]
            row[j] = diagonal + 1 if digit == want else max(above, row[j - 1])
            diagonal = above
    through = min(range(len(row)), key=lambda j: (j - 2 * row[j], j))
    matched = row[through]
    return DigitCheck(n, through - matched, n - matched, True)


# ----------------------------------------------------------------------------- one run


@dataclass
class BudgetResult:
    variant: str
    label: str
    seconds: float = 0.0
    ready_s: float = math.nan
    cpu_per_min: float = math.nan
    overflows: int | None = None
    underruns: int | None = None
    violations: dict[str, int] = field(default_factory=dict)
    chunk_violations: int = 0
    connections: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    audio_s: float = 0.0  # audio the cloud received
    session_s: float = 0.0  # press to end of the measured window
    digits: DigitCheck | None = None
    stats: BudgetStats = field(default_factory=BudgetStats)
    load: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # start, max, end
    error: str = ""


class LoadSampler:
    """The machine's 1-minute load average every few seconds (the budget is absolute; the
    machine is shared)."""

    def __init__(self) -> None:
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(LOAD_SAMPLE_SECONDS):
            self.samples.append(os.getloadavg()[0])

    def stop(self) -> tuple[float, float, float]:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])
        return self.samples[0], max(self.samples), self.samples[-1]


def run_budget(h: Any, variant: Any, seconds: float, limits: Limits, cycle: str) -> BudgetResult:
    """One workload of harness ``h`` (scripts/bench/runner.py) under the budget."""
    from scripts.bench.measure import Window
    from scripts.bench.notify import NotifyListener

    result = BudgetResult(variant.key, variant.label)
    kind = "agent" if variant.key.startswith("d-agent") else "streaming"
    budget = Budget(f"bench-budget-{os.getpid()}-{variant.key}", limits).create()
    trace = h.tmp / f"trace-budget-{variant.key}-{time.monotonic_ns()}.json"
    notify = NotifyListener()
    since = len(h.emu.state.sessions)
    since_violations = len(h.emu.state.violations)
    chunk0 = h.emu.state.counters["chunk_size_violations"]
    uploads0 = set(h.emu.state.uploads)
    load = LoadSampler()
    t_spawn = time.monotonic()
    at_begin = at_end = None
    proc = h.spawn(variant, trace, notify, before_exec=budget.join)
    try:
        if not notify.ready.wait(BUDGET_READY_TIMEOUT_SECONDS):
            result.error = "no READY=1"
            return result
        result.ready_s = (notify.ready_at or math.nan) - t_spawn
        time.sleep(0.5)
        t_press = h.press(proc)
        time.sleep(2.0)
        window = Window(proc.pid)
        window.begin()
        at_begin = budget.stats()
        time.sleep(seconds)
        window.end()
        at_end = budget.stats()
        result.cpu_per_min = window.cpu_per_audio_minute
        result.seconds = window.seconds
        result.session_s = time.monotonic() - t_press
        if variant.key in STOP_LINE:
            h.press_line(proc, STOP_LINE[variant.key])
            _wait_for_upload(h, uploads0, UPLOAD_TIMEOUT_SECONDS)
    finally:
        h.finish(proc, terminate=variant.terminate, timeout=60.0)
        notify.close()
        result.load = load.stop()
        final = budget.stats()
        budget.remove()
    if at_end is not None and at_begin is not None:
        # Throttling over the measured window; memory and OOM kills over the whole run.
        result.stats = dataclasses.replace(
            at_end.since(at_begin),
            memory_peak_bytes=final.memory_peak_bytes,
            memory_limit_hits=final.memory_limit_hits,
            oom_kills=final.oom_kills,
        )
    else:
        result.stats = final
    if proc.returncode not in (0, None, -15) and not result.error:
        result.error = f"exit code {proc.returncode}"
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(trace.read_text())
        result.overflows = data.get("overflows")
        result.underruns = data.get("underruns")
    state = h.emu.state
    rules: dict[str, int] = {}
    for v in state.violations[since_violations:]:
        rules[v.rule] = rules.get(v.rule, 0) + 1
    result.violations = rules
    result.chunk_violations = state.counters["chunk_size_violations"] - chunk0
    sessions = [s for s in state.sessions[since:] if s.kind == kind]
    result.connections = len(sessions)
    result.close_codes = [s.close_code for s in sessions]
    if variant.key == "d-record":
        audio, rate = _uploaded_audio(h, uploads0)
    else:
        chunks = [c for s in sessions for c in s.audio_chunks]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
        rate = sessions[0].rate if sessions else 16_000
    result.audio_s = len(audio) / rate
    if len(audio):
        received = dtmf.decode_digits(audio, rate)
        (h.tmp / f"budget-digits-{variant.key}.txt").write_text(received)
        result.digits = check_digits(received, cycle)
    return result


def _wait_for_upload(h: Any, before: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not set(h.emu.state.uploads) - before:
        time.sleep(0.5)


def _uploaded_audio(h: Any, before: set[str]) -> tuple[np.ndarray, int]:
    """The recording the daemon uploaded (its first new upload), as samples and rate."""
    from appliance.dtmf import read_wav

    new = [u for k, u in h.emu.state.uploads.items() if k not in before]
    if not new:
        return np.zeros(0, np.int16), 16_000
    try:
        samples, rate = read_wav(new[0].path)
    except (OSError, ValueError, EOFError):
        return np.zeros(0, np.int16), 16_000
    return samples, rate


# ----------------------------------------------------------------------------- report


def _count(value: int | None) -> str:
    return "n/a" if value is None else str(value)


def verdict(r: BudgetResult, kind_has_playback: bool) -> str:
    """``holds`` when nothing was lost or refused, else what went wrong."""
    if r.error:
        return f"NO ({r.error})"
    why = []
    if r.overflows:
        why.append("overflows")
    if kind_has_playback and r.underruns:
        why.append("underruns")
    if sum(r.violations.values()) or r.chunk_violations:
        why.append("violations")
    if r.digits is None or not r.digits.ok:
        why.append("digits")
    if r.stats.oom_kills:
        why.append("OOM")
    return "holds" if not why else "NO (" + ", ".join(why) + ")"


def section(results: list[BudgetResult], budget_text: str, machine: str, minutes: float,
            when: str, command: str) -> list[str]:  # fmt: skip
    """The BENCHMARKS.md section, as lines."""
    lines = [
        HEADING,
        "",
        f"`{command}` on {when}, {machine}. Each workload ran once for {minutes:g} min "
        f"(after READY=1, a press and 2 s) with only its own process in a cgroup: "
        f"{budget_text}, no burst. The emulator (strict pacing: never ahead of real time "
        "by more than one frame; 50-1000 ms frames) and the sound server ran outside it. "
        "The machine is shared with other work: the budget is absolute, and its load "
        "average during each run is given.",
        "",
        "| workload | CPU-s per audio min | periods throttled | start -> READY=1 s "
        "| peak memory MiB | overflows | underruns | pacing / chunk violations "
        "| connections (close codes) | audio received / session s | digits: received, "
        "missing, extra | load avg (start, max, end) | budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        st = r.stats
        throttled = "n/a" if st.throttled_fraction is None else f"{st.throttled_fraction:.0%}"
        peak = "n/a" if st.memory_peak_bytes is None else f"{st.memory_peak_bytes / 2**20:.1f}"
        if st.memory_limit_hits:  # the kernel reclaimed (page cache) to stay under the limit
            peak += f" (limit reached {st.memory_limit_hits}x)"
        pacing = r.violations.get("pacing", 0)
        codes = ", ".join(str(c) for c in r.close_codes) or "none"
        d = r.digits
        digits = "none" if d is None else f"{d.decoded}, {d.missing}, {d.extra}"
        if d is not None and not d.anchored:
            digits += " (not aligned)"
        others = {k: v for k, v in r.violations.items() if k != "pacing"}
        if others:
            pacing_cell = f"{pacing} / {r.chunk_violations}; " + ", ".join(
                f"{k} {v}" for k, v in others.items()
            )
        else:
            pacing_cell = f"{pacing} / {r.chunk_violations}"
        playback = r.variant.startswith("d-agent")
        load = ", ".join(f"{x:.2f}" for x in r.load)
        lines.append(
            f"| {r.label} | {r.cpu_per_min:.2f} | {throttled} | {r.ready_s:.1f} | {peak} "
            f"| {_count(r.overflows)} | {_count(r.underruns) if playback else 'n/a'} "
            f"| {pacing_cell} | {r.connections} ({codes}) | {r.audio_s:.1f} / {r.session_s:.1f} "
            f"| {digits} | {load} | {verdict(r, playback)} |"
        )
    lines += [
        "",
        "- Digits: the audio the emulator received (for the recording: the file it was sent) "
        "decoded as DTMF and aligned with the looped test signal's sequence; the first and "
        "last digit are left out (cut by the start and end).",
        "- Periods throttled: the share of the group's CFS periods in the measured window "
        "in which it used up its quota (cpu.stat); peak memory is the group's own high-water "
        "mark over the whole run: what the limit applies to, the pages charged to the group "
        "(its heap and the page cache it brought in; library pages another process had "
        "already read are charged to that one, so this is below the process's RSS).",
    ]
    return lines


def main(args: Any) -> int:
    """``--budget``: every workload of :data:`BUDGET_VARIANTS` under the budget, one section."""
    from scripts.bench.audiostack import MIC_RATE, PulseStack, test_signal
    from scripts.bench.measure import machine_info
    from scripts.bench.runner import Harness, variants

    why = PulseStack.available()
    if why:
        print(f"bench: {why}", flush=True)
        return 4
    if os.geteuid() != 0:
        print("bench: --budget makes cgroups and needs root (sudo)", flush=True)
        return 4

    def stop(*_: object) -> None:
        raise SystemExit(143)  # SIGTERM: through the finally blocks, children stopped

    signal.signal(signal.SIGTERM, stop)
    limits = Limits()
    seconds = args.budget_minutes * 60
    h = Harness(args)
    results: list[BudgetResult] = []
    keys = args.variants.split(",") if args.variants else list(BUDGET_VARIANTS)
    try:
        h.start()
        cycle = digit_cycle(test_signal(), MIC_RATE)
        table = variants(None, h.file_source)
        for key in keys:
            print(f"[bench] budget {key} ({args.budget_minutes:g} min)", flush=True)
            r = run_budget(h, table[key], seconds, limits, cycle)
            d = r.digits
            print(
                f"[bench]   {key}: {r.cpu_per_min:.2f} CPU-s/min, overflows {r.overflows}, "
                f"underruns {r.underruns}, violations {r.violations} / {r.chunk_violations}, "
                f"digits {d}, throttled {r.stats.throttled_fraction}, "
                f"peak {r.stats.memory_peak_bytes}, {r.error or 'ok'}",
                flush=True,
            )
            results.append(r)
    finally:
        h.stop()
    raw = h.tmp / "budget-results.json"
    raw.write_text(json.dumps([dataclasses.asdict(r) for r in results], default=str))
    print(f"[bench] the rows as JSON: {raw}", flush=True)
    info = machine_info()
    machine = f"{info.get('cpu', 'this machine')}, {info.get('cores', '?')} cores"
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = f"scripts/bench.py --budget --budget-minutes {args.budget_minutes:g}"
    text = Budget("probe", limits).description
    write_section(
        args.output, section(results, text, machine, args.budget_minutes, when, command), HEADING
    )
    print(f"[bench] wrote the budget section of {args.output}", flush=True)
    return 0
