"""The session soak's report: growth per 1,000 sessions, and its own section of BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.bench.report import write_section
from scripts.bench.soak import CYCLE, HEADING, Sample, SoakResult, section, summarise


def result_growing(per_session_mib: float, n: int = 300) -> SoakResult:
    samples = [Sample(0, "idle", "", 0.0, 60.0, 30, 9, 18, 0.0, 1)]
    for i in range(1, n + 1):
        mode, end = CYCLE[(i - 1) % len(CYCLE)]
        cpu = 0.05 if i <= 100 else 0.055
        samples.append(Sample(i, mode, end, 1.0, 60.0 + per_session_mib * i, 30, 9, 18, cpu, 4))
    return SoakResult(sessions=n, planned=n, wall_minutes=7.0, samples=samples)


def test_growth_is_per_1000_sessions_and_first_against_last_100() -> None:
    summary = summarise(result_growing(0.002))
    assert summary["window"] == 100
    assert summary["rss_per_1000"] == pytest.approx(2.0)
    assert summary["rss_last"] - summary["rss_first"] == pytest.approx(0.4)
    first, last, pct = summary["cpu"]["live"]
    assert (first, last) == (pytest.approx(0.05), pytest.approx(0.055))
    assert pct == pytest.approx(10.0)
    assert summary["modes"]["agent"] == sum(1 for i in range(300) if CYCLE[i % 11][0] == "agent")


def test_the_soak_section_replaces_its_old_self_and_keeps_the_rest(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## CPU\n\nkept\n\n## Targets\n\nalso kept\n")
    result = result_growing(0.0)
    lines = section(result, summarise(result), "docs/soak-rss.png", None, "a 2-core box")
    write_section(report, lines, HEADING)
    write_section(report, lines, HEADING)
    text = report.read_text()
    assert text.count("## Session soak") == 1
    assert text.index("## CPU") < text.index("## Session soak") < text.index("## Targets")
    assert "kept" in text and "also kept" in text and "![RSS against sessions]" in text


def test_cpu_growth_that_the_machine_slowing_down_explains_is_taken_out() -> None:
    samples = [Sample(0, "idle", "", 0.0, 60.0, 30, 9, 18, 0.0, 1, 0.005)]
    for i in range(1, 301):
        mode, end = CYCLE[(i - 1) % len(CYCLE)]
        slow = 1.0 if i <= 100 else 1.2  # others' work arrived on the cores
        samples.append(Sample(i, mode, end, 1.0, 60.0, 30, 9, 18, 0.05 * slow, 4, 0.005 * slow))
    result = SoakResult(sessions=300, planned=300, wall_minutes=7.0, samples=samples)
    summary = summarise(result)
    assert summary["cpu"]["live"][2] == pytest.approx(20.0)
    first, last, pct = summary["cpu_per_machine_speed"]["live"]
    assert first == pytest.approx(10.0) == last and pct == pytest.approx(0.0)
    lines = section(result, summary, None, None, "a 2-core box")
    assert any("machine-speed units" in line and "+0.0 %" in line for line in lines)
