"""Start-up and import cost: process start to READY=1, and what the daemon imports on the way.

``scripts/bench.py --startup [--startup-runs N]`` first compiles the package's
bytecode as an install leaves it (``compileall``), then, for each mode, starts
``appliance run`` (the benchmark's daemon workload, without its audio trace,
which would import modules the mode may not need) N times against the shared
audio stack and emulator: spawn to READY=1 from the notification socket, RSS
at READY=1 from /proc.  One more start per mode runs with
``PYTHONPROFILEIMPORTTIME=1``: the modules it imported before READY=1, the
costliest listed with their own and cumulative import time.  Bare
interpreter start-up (``python -c pass``, site included) is the floor.  The
section replaces its old self in BENCHMARKS.md.
"""

from __future__ import annotations

import compileall
import contextlib
import datetime as dt
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("live", "agent", "record")
#: Starts per mode (medians reported).
DEFAULT_RUNS = 7
#: Modules listed per mode, by cumulative import time.
TOP_MODULES = 12
#: The daemon's log line as it sends READY=1: imports after it (the first token's
#: httpx, while the profiled start winds down) are not start-up's.
READY_LOG_MARK = "appliance.daemon: ready:"
#: The issue's target: process start to READY=1 (seconds).
READY_TARGET_S = 0.4
HEADING = "## Start-up and imports"


@dataclass(frozen=True)
class ImportRow:
    module: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(text: str) -> list[ImportRow]:
    """``-X importtime`` lines (``import time: self | cumulative | name``) as rows."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        name = parts[2].rstrip()
        stripped = name.lstrip(" ")
        depth = (len(name) - len(stripped) - 1) // 2
        rows.append(ImportRow(stripped, int(parts[0]), int(parts[1]), depth))
    return rows


def top_level(rows: list[ImportRow], prefix: str = "appliance") -> list[ImportRow]:
    """The costliest imports by cumulative time: the package's own modules and the
    third-party and standard modules imported from them, each counted once."""
    seen: dict[str, ImportRow] = {}
    for row in rows:
        if not (row.module.startswith(prefix) or row.depth <= 1):
            continue
        if row.module not in seen or row.cumulative_us > seen[row.module].cumulative_us:
            seen[row.module] = row
    return sorted(seen.values(), key=lambda r: r.cumulative_us, reverse=True)


@dataclass
class ModeStartup:
    mode: str
    ready_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    modules: int = 0  # modules imported (importtime rows) in the profiled start
    import_s: float = math.nan  # their summed self time
    top: list[ImportRow] = field(default_factory=list)
    error: str = ""


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return math.nan


def _start(h: Any, mode: str, profile: bool) -> tuple[float, float, str]:
    """One start of the daemon: (spawn -> READY=1 s, RSS MiB at READY=1, importtime text)."""
    from scripts.bench.notify import NotifyListener
    from scripts.bench.runner import READY_TIMEOUT_SECONDS, ROOT, workload

    argv = [*workload("daemon"), "--mode", mode, "--no-trace"]
    argv += ["--http-url", h.emu.http_url, "--api-key", h.api_key]
    notify = NotifyListener()
    env = dict(h.stack.env, NOTIFY_SOCKET=notify.path, PYTHONPATH=str(ROOT))
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    if profile:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    err = h.tmp / f"startup-{mode}-{time.monotonic_ns()}.err"
    with err.open("wb") as stderr:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=h.log, stderr=stderr
        )
        try:
            ok = notify.ready.wait(READY_TIMEOUT_SECONDS)
            ready = (notify.ready_at or math.nan) - t0 if ok else math.nan
            rss = _rss_mb(proc.pid) if ok else math.nan
        finally:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            notify.close()
    return ready, rss, err.read_text(errors="replace")


def interpreter_start_s(runs: int) -> float:
    """Median wall time of ``python -c pass`` (the floor every start pays)."""
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.monotonic() - t0)
    return statistics.median(times)


def cli_import(runs: int) -> tuple[float, float]:
    """``import appliance.cli`` in a fresh interpreter: (ms, RSS MiB after), medians.

    RSS is VmRSS: ru_maxrss survives exec, so a child of a big harness reports the harness's.
    """
    code = (
        "import time; t = time.perf_counter(); import appliance.cli; "
        "d = time.perf_counter() - t; "
        "rss = [l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0]; "
        "print(d * 1000, int(rss.split()[1]) / 1024)"
    )
    ms, rss = [], []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        a, b = out.stdout.split()
        ms.append(float(a))
        rss.append(float(b))
    return statistics.median(ms), statistics.median(rss)


def run_startup(h: Any, runs: int) -> list[ModeStartup]:
    from scripts.bench.runner import ROOT

    compileall.compile_dir(str(ROOT / "appliance"), quiet=1)
    out = []
    for mode in MODES:
        m = ModeStartup(mode)
        for i in range(runs + 1):
            profile = i == runs  # the last start, apart: profiling slows imports
            ready, rss, err = _start(h, mode, profile)
            if math.isnan(ready):
                m.error = "no READY=1"
                break
            if profile:
                rows = parse_importtime(err.split(READY_LOG_MARK, 1)[0])
                m.modules = len(rows)
                m.import_s = sum(r.self_us for r in rows) / 1e6
                m.top = top_level(rows)[:TOP_MODULES]
            else:
                m.ready_s.append(ready)
                m.rss_mb.append(rss)
        print(
            f"[bench] start-up {mode}: READY=1 {_median(m.ready_s):.3f} s, "
            f"RSS {_median(m.rss_mb):.1f} MiB, {m.modules} modules {m.import_s:.3f} s",
            flush=True,
        )
        out.append(m)
    return out


def _median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def section(results: list[ModeStartup], floor_s: float, machine: str, when: str,
            command: str, load: float, cli: tuple[float, float] = (math.nan, math.nan),
            ) -> list[str]:  # fmt: skip
    """The BENCHMARKS.md section, as lines."""
    lines = [
        HEADING,
        "",
        f"`{command}` on {when}, {machine} (load average {load:.2f} at the start; shared "
        "with other work). The package's bytecode compiled first (compileall, as an install "
        "leaves it); each start is the benchmark's daemon workload (`appliance run`, generated "
        "config, keyboard button, no audio trace) against the shared audio stack and emulator, "
        "timed from spawn to READY=1 on the notification socket (READY=1 waits for the "
        "microphone's first block: 200 ms blocks in live and recording, 100 ms in the agent, "
        "as `audio.block_ms` defaults by mode). Medians of the starts; the import columns "
        "come from one "
        "more start with `PYTHONPROFILEIMPORTTIME=1` (which slows imports by itself), up to "
        "the daemon's `ready:` log line.",
        "",
        f"| mode | starts | start -> READY=1 s (median, max) | target <= {READY_TARGET_S} s "
        "| RSS at READY=1 MiB | modules imported | their import time s |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results:
        ready = _median(m.ready_s)
        top = max(m.ready_s) if m.ready_s else math.nan
        met = "n/a" if math.isnan(ready) else ("yes" if ready <= READY_TARGET_S else "NO")
        lines.append(
            f"| {m.mode} | {len(m.ready_s)} | {ready:.3f}, {top:.3f} | {met} "
            f"| {_median(m.rss_mb):.1f} | {m.modules} | {m.import_s:.3f} |"
            + (f" {m.error}" if m.error else "")
        )
    missed = any(_median(m.ready_s) > READY_TARGET_S for m in results if m.ready_s)
    if missed:
        from scripts.bench.findings import FINDINGS

        lines += ["", "The target is missed here. What was tried, and the limit:", ""]
        lines += FINDINGS["startup"]
    lines += [
        "",
        f"- Floor: `python -c pass` (interpreter and site) takes {floor_s:.3f} s here.",
        f"- `import appliance.cli` alone (every command's entry; each subcommand imports "
        f"what it needs): {cli[0]:.1f} ms, RSS {cli[1]:.1f} MiB after it.",
        "",
        "Costliest imports on the way to READY=1 (cumulative, i.e. with what each pulls in; "
        "the package's modules and what they import directly):",
        "",
        "| mode | module | cumulative ms | own ms |",
        "|---|---|---|---|",
    ]
    for m in results:
        for row in m.top:
            lines.append(
                f"| {m.mode} | `{row.module}` | {row.cumulative_us / 1000:.1f} "
                f"| {row.self_us / 1000:.1f} |"
            )
    return lines


def main(args: Any) -> int:
    """``--startup``: the start-up rows and the import profile, one section of the report."""
    from scripts.bench.audiostack import PulseStack
    from scripts.bench.measure import machine_info
    from scripts.bench.report import write_section
    from scripts.bench.runner import Harness

    why = PulseStack.available()
    if why:
        print(f"bench: {why}", flush=True)
        return 4
    load = os.getloadavg()[0]
    h = Harness(args)
    try:
        h.start()
        results = run_startup(h, args.startup_runs)
    finally:
        h.stop()
    floor = interpreter_start_s(args.startup_runs)
    cli = cli_import(args.startup_runs)
    info = machine_info()
    machine = f"{info.get('cpu', 'this machine')}, {info.get('cores', '?')} cores"
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = f"scripts/bench.py --startup --startup-runs {args.startup_runs}"
    write_section(args.output, section(results, floor, machine, when, command, load, cli), HEADING)
    print(f"[bench] wrote the start-up section of {args.output}", flush=True)
    return 0
