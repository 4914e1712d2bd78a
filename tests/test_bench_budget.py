"""The Pi-class budget: its cgroup files, the digit check and its own section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance import dtmf
from scripts.bench.budget import (
    HEADING,
    BudgetResult,
    check_digits,
    digit_cycle,
    section,
)
from scripts.bench.cgroup import Budget, BudgetStats, Limits
from scripts.bench.report import write_section

SELF_CGROUP_V1 = "4:memory:/outer/job\n2:cpu:/\n0::/\n"


def fake_v1(root: Path) -> Path:
    """A cgroup v1 tree like this machine's: cpu at the top, memory nested in a job's group."""
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_burst_us").write_text("0")
    (root / "memory" / "outer" / "job").mkdir(parents=True)
    self_cgroup = root / "self-cgroup"
    self_cgroup.write_text(SELF_CGROUP_V1)
    return self_cgroup


def test_v1_limits_are_written_below_the_callers_own_groups(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    self_cgroup = fake_v1(root)
    limits = Limits(cpu_fraction=0.1, period_us=100_000, memory_bytes=128 * 2**20)
    budget = Budget("b", limits, root=root, self_cgroup=self_cgroup)
    # mkdir on a real cgroupfs creates the control files; the fake needs the optional one.
    (root / "memory" / "outer" / "job" / "b").mkdir()
    (root / "memory" / "outer" / "job" / "b" / "memory.memsw.limit_in_bytes").write_text("")
    budget.create()
    cpu = root / "cpu" / "b"
    memory = root / "memory" / "outer" / "job" / "b"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "10000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (memory / "memory.limit_in_bytes").read_text() == str(128 * 2**20)
    assert (memory / "memory.memsw.limit_in_bytes").read_text() == str(128 * 2**20)
    assert "100 ms period" in budget.description


def test_joining_writes_the_pid_to_both_groups(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    budget = Budget("b", root=root, self_cgroup=fake_v1(root)).create()
    budget.join(4242)
    assert (root / "cpu" / "b" / "cgroup.procs").read_text() == "4242"
    assert (root / "memory" / "outer" / "job" / "b" / "cgroup.procs").read_text() == "4242"


def test_v2_uses_cpu_max_and_memory_max_in_one_group(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    (root / "work.slice").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu memory")
    self_cgroup = tmp_path / "self-cgroup"
    self_cgroup.write_text("0::/work.slice\n")
    budget = Budget("b", Limits(0.1, 50_000, 64 * 2**20), root=root, self_cgroup=self_cgroup)
    budget.create().join(7)
    group = root / "work.slice" / "b"
    assert (group / "cpu.max").read_text() == "5000 50000"
    assert (group / "memory.max").read_text() == str(64 * 2**20)
    assert (group / "cgroup.procs").read_text() == "7"


def test_v1_stats_come_from_cpu_stat_and_the_memory_counters(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    budget = Budget("b", root=root, self_cgroup=fake_v1(root)).create()
    cpu = root / "cpu" / "b"
    memory = root / "memory" / "outer" / "job" / "b"
    (cpu / "cpu.stat").write_text("nr_periods 200\nnr_throttled 50\nthrottled_time 3000000000\n")
    (memory / "memory.max_usage_in_bytes").write_text("52428800\n")
    (memory / "memory.failcnt").write_text("0\n")
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    stats = budget.stats()
    assert stats.throttled_fraction == 0.25
    assert stats.throttled_s == 3.0
    assert stats.memory_peak_bytes == 50 * 2**20
    assert stats.oom_kills == 1
    earlier = BudgetStats(periods=100, throttled_periods=50, throttled_s=1.0)
    assert stats.since(earlier).throttled_fraction == 0.0


SIGNAL_RATE = 8000


def looped_signal() -> np.ndarray:
    return dtmf.generate("1234567890" * 2 + "97531", SIGNAL_RATE, lead_ms=100, trail_ms=100)


def test_the_cycle_is_what_one_period_of_the_loop_plays() -> None:
    assert digit_cycle(looped_signal(), SIGNAL_RATE) == "1234567890" * 2 + "97531"


def test_a_stretch_of_the_loop_with_every_digit_holds() -> None:
    cycle = "1234567890" * 2 + "97531"
    received = (cycle * 4)[7:93]
    check = check_digits(received, cycle)
    assert (check.decoded, check.missing, check.extra, check.ok) == (84, 0, 0, True)


def test_a_gap_in_the_middle_counts_the_digits_lost() -> None:
    cycle = "7391528640481273956023"
    played = (cycle * 4)[7:93]
    received = played[:40] + played[43:]
    check = check_digits(received, cycle)
    assert (check.missing, check.extra, check.ok) == (3, 0, False)


def test_a_digit_heard_that_was_never_played_is_extra() -> None:
    cycle = "7391528640481273956023"
    played = (cycle * 4)[5:70]
    check = check_digits(played[:30] + "5" + played[30:], cycle)
    assert (check.missing, check.extra, check.ok) == (0, 1, False)


def test_a_stretch_that_is_not_the_loop_is_not_aligned() -> None:
    check = check_digits("0000000000000000000000", "1234567890" * 2 + "97531")
    assert not check.anchored and not check.ok


def test_the_budget_section_replaces_its_old_self_and_keeps_the_rest(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## CPU\n\nkept\n\n## Targets\n\nalso kept\n")
    row = BudgetResult("d-live", "ours, live", cpu_per_min=0.8, overflows=0, underruns=0)
    lines = section([row], "cgroup v1: ...", "a 2-core box", 10, "today", "scripts/bench.py")
    write_section(report, lines, HEADING)
    write_section(report, lines, HEADING)
    text = report.read_text()
    assert text.count("## Pi-class budget") == 1
    assert "kept" in text and "also kept" in text
    assert text.index("## Pi-class budget") < text.index("## Targets")
    assert "| ours, live | 0.80 |" in text
