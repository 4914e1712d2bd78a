"""What the OS says a process costs: CPU from /proc/<pid>/stat, memory from /proc/<pid>/status.

Every figure the benchmark reports about a workload comes from the kernel's
own accounting of the whole process (all its threads), plus any child
processes it started, so nothing the workload does can hide from it.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: How often the RSS sampler looks at a running workload.
RSS_SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds: the process's own threads and its reaped children."""

    user: float
    system: float
    children_user: float
    children_system: float

    @property
    def total(self) -> float:
        return self.user + self.system + self.children_user + self.children_system


def read_cpu_times(pid: int) -> CpuTimes:
    """utime, stime, cutime, cstime of ``pid`` (fields 14-17 of /proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14 -> index 11.
    utime, stime, cutime, cstime = (int(x) / CLOCK_TICKS for x in fields[11:15])
    return CpuTimes(utime, stime, cutime, cstime)


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (from each process's parent id in /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid``, its reaped children and its live descendants."""
    total = read_cpu_times(pid).total
    for child in descendants(pid):
        try:
            t = read_cpu_times(child)
        except (OSError, ValueError):
            continue  # exited meanwhile (then it is in its parent's children times)
        total += t.user + t.system
    return total


def read_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid`` in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class RssSampler:
    """Samples a process's RSS in a thread; ``steady`` is the median of the later half."""

    def __init__(self, pid: int, period: float = RSS_SAMPLE_SECONDS) -> None:
        self.pid = pid
        self.period = period
        self.samples: list[tuple[float, int]] = []
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        try:
            mem = read_memory_kib(self.pid)
        except OSError:
            return
        self.samples.append((time.monotonic(), mem.get("VmRSS", 0)))
        self.peak_kib = max(self.peak_kib, mem.get("VmHWM", 0))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def steady_kib(self) -> int:
        values = [v for _, v in self.samples]
        if not values:
            return 0
        return int(statistics.median(values[len(values) // 2 :]))


@dataclass
class Window:
    """CPU used by a process tree between :meth:`begin` and :meth:`end`."""

    pid: int
    t0: float = 0.0
    cpu0: float = 0.0
    seconds: float = 0.0
    cpu: float = 0.0

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = tree_cpu_seconds(self.pid)

    def end(self) -> None:
        self.cpu = tree_cpu_seconds(self.pid) - self.cpu0
        self.seconds = time.monotonic() - self.t0

    @property
    def cpu_per_audio_minute(self) -> float:
        """CPU seconds per minute of (real-time) audio."""
        return self.cpu * 60.0 / self.seconds if self.seconds else math.nan


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; nan when empty."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median(values: list[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


def machine_info() -> dict[str, str]:
    """CPU model, cores, kernel and Python, for the report header."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pa_version = subprocess.run(
            ["pulseaudio", "--version"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pa_version = "unknown"
    return {
        "cpu": model or platform.processor() or "unknown",
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pulseaudio": pa_version,
    }
