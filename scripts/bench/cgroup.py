"""A CPU and memory budget for one process: a cgroup of its own under the caller's.

The Pi-class budget (``scripts/bench.py --budget``) runs a workload inside
cgroups limited to a fraction of one core (CFS quota over a period) and a
memory limit.  Only that process (and whatever it starts) joins them, from
its ``preexec_fn``, so the harness, the emulator and the sound server keep
their own share of the machine.

Both layouts are handled: cgroup v1 (one hierarchy per controller, the
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` and ``memory.limit_in_bytes``
files) and cgroup v2 (``cpu.max``, ``memory.max``).  The new groups are
created below the caller's own group of each controller (from
``/proc/self/cgroup``), so limits set above the caller still hold.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
#: How long :meth:`Budget.remove` waits for the group's processes to be gone.
EMPTY_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Limits:
    """The budget: ``cpu_fraction`` of one core per ``period_us``, and a memory limit."""

    cpu_fraction: float = 0.10
    period_us: int = 100_000
    memory_bytes: int = 128 * 1024 * 1024

    @property
    def quota_us(self) -> int:
        return max(1000, round(self.cpu_fraction * self.period_us))


@dataclass(frozen=True)
class BudgetStats:
    """What the kernel counted inside the group (None where the layout has no such file)."""

    periods: int | None = None  # CFS periods in which the group ran
    throttled_periods: int | None = None  # ... and in which it hit the quota
    throttled_s: float | None = None
    memory_peak_bytes: int | None = None
    memory_limit_hits: int | None = None  # v1 failcnt / v2 memory.events max
    oom_kills: int | None = None

    def since(self, earlier: BudgetStats) -> BudgetStats:
        """The CPU counters over the stretch from ``earlier`` (memory figures stay as read)."""

        def diff(a: float | None, b: float | None) -> Any:
            return None if a is None or b is None else a - b

        return BudgetStats(
            periods=diff(self.periods, earlier.periods),
            throttled_periods=diff(self.throttled_periods, earlier.throttled_periods),
            throttled_s=diff(self.throttled_s, earlier.throttled_s),
            memory_peak_bytes=self.memory_peak_bytes,
            memory_limit_hits=self.memory_limit_hits,
            oom_kills=self.oom_kills,
        )

    @property
    def throttled_fraction(self) -> float | None:
        if not self.periods or self.throttled_periods is None:
            return None
        return self.throttled_periods / self.periods


def _own_paths(self_cgroup: str) -> tuple[dict[str, str], str | None]:
    """(v1 controller -> path, v2 path) of the caller from /proc/self/cgroup's text."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        for name in controllers.split(","):
            if name:
                v1[name] = path
    return v1, v2


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat-keyed cgroup file (``key value`` per line) as a dict."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


class Budget:
    """One process's CPU and memory cgroups: :meth:`create`, :meth:`join`, :meth:`remove`."""

    def __init__(
        self,
        name: str,
        limits: Limits = Limits(),
        root: Path = CGROUP_ROOT,
        self_cgroup: Path = SELF_CGROUP,
    ) -> None:
        self.name = name
        self.limits = limits
        self.root = root
        self.v2 = (root / "cgroup.controllers").exists()
        v1_paths, v2_path = _own_paths(self_cgroup.read_text())
        if self.v2:
            self.cpu_dir = self.memory_dir = root / (v2_path or "/").lstrip("/") / name
        else:
            self.cpu_dir = self._v1_mount("cpu") / v1_paths.get("cpu", "/").lstrip("/") / name
            self.memory_dir = (
                self._v1_mount("memory") / v1_paths.get("memory", "/").lstrip("/") / name
            )

    def _v1_mount(self, controller: str) -> Path:
        """Where a v1 controller's hierarchy is mounted (``cpu`` or a joint ``cpu,cpuacct``)."""
        plain = self.root / controller
        if plain.is_dir():
            return plain
        for entry in sorted(self.root.iterdir()):
            if controller in entry.name.split(","):
                return entry
        raise FileNotFoundError(f"no cgroup v1 hierarchy for {controller} under {self.root}")

    @property
    def description(self) -> str:
        """The files written, for the report."""
        lim = self.limits
        mib = lim.memory_bytes // (1024 * 1024)
        if self.v2:
            return f"cgroup v2: cpu.max `{lim.quota_us} {lim.period_us}`, memory.max {mib} MiB"
        return (
            f"cgroup v1: cpu.cfs_quota_us {lim.quota_us} / cpu.cfs_period_us {lim.period_us} "
            f"({lim.period_us / 1000:g} ms period), memory.limit_in_bytes {mib} MiB"
        )

    def create(self) -> Budget:
        """Make the groups and write the limits (the memory+swap limit too, where there is one)."""
        lim = self.limits
        if self.v2:
            parent = self.cpu_dir.parent
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+cpu +memory")
            self.cpu_dir.mkdir(exist_ok=True)
            (self.cpu_dir / "cpu.max").write_text(f"{lim.quota_us} {lim.period_us}")
            (self.memory_dir / "memory.max").write_text(str(lim.memory_bytes))
            swap = self.memory_dir / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")
            return self
        self.cpu_dir.mkdir(exist_ok=True)
        (self.cpu_dir / "cpu.cfs_period_us").write_text(str(lim.period_us))
        (self.cpu_dir / "cpu.cfs_quota_us").write_text(str(lim.quota_us))
        burst = self.cpu_dir / "cpu.cfs_burst_us"
        if burst.exists():
            burst.write_text("0")  # no banked quota: the budget holds in every period
        self.memory_dir.mkdir(exist_ok=True)
        (self.memory_dir / "memory.limit_in_bytes").write_text(str(lim.memory_bytes))
        memsw = self.memory_dir / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            with contextlib.suppress(OSError):  # EINVAL when swap accounting is off
                memsw.write_text(str(lim.memory_bytes))
        return self

    def join(self, pid: int | None = None) -> None:
        """Move ``pid`` (default: the calling process, as a ``preexec_fn``) into the groups."""
        text = str(os.getpid() if pid is None else pid)
        for directory in dict.fromkeys((self.cpu_dir, self.memory_dir)):
            (directory / "cgroup.procs").write_text(text)

    def stats(self) -> BudgetStats:
        """Throttling and memory as the kernel counted them since :meth:`create`."""
        cpu = _read_keyed(self.cpu_dir / "cpu.stat")
        if self.v2:
            events = _read_keyed(self.memory_dir / "memory.events")
            usec = cpu.get("throttled_usec")
            return BudgetStats(
                periods=cpu.get("nr_periods"),
                throttled_periods=cpu.get("nr_throttled"),
                throttled_s=None if usec is None else usec / 1e6,
                memory_peak_bytes=_read_int(self.memory_dir / "memory.peak"),
                memory_limit_hits=events.get("max"),
                oom_kills=events.get("oom_kill"),
            )
        ns = cpu.get("throttled_time")
        oom = _read_keyed(self.memory_dir / "memory.oom_control")
        return BudgetStats(
            periods=cpu.get("nr_periods"),
            throttled_periods=cpu.get("nr_throttled"),
            throttled_s=None if ns is None else ns / 1e9,
            memory_peak_bytes=_read_int(self.memory_dir / "memory.max_usage_in_bytes"),
            memory_limit_hits=_read_int(self.memory_dir / "memory.failcnt"),
            oom_kills=oom.get("oom_kill"),
        )

    def remove(self, timeout: float = EMPTY_TIMEOUT_SECONDS) -> None:
        """Remove the groups once their processes are gone (left in place if they are not)."""
        deadline = time.monotonic() + timeout
        for directory in dict.fromkeys((self.cpu_dir, self.memory_dir)):
            while time.monotonic() < deadline:
                try:
                    if not (directory / "cgroup.procs").read_text().strip():
                        break
                except OSError:
                    break
                time.sleep(0.1)
            with contextlib.suppress(OSError):
                directory.rmdir()
