"""The full benchmark report: its own sections rewritten, other runs' sections kept."""

from __future__ import annotations

from pathlib import Path

from scripts.bench.findings import FINDINGS
from scripts.bench.runner import LIVE_TO_SDK_LIMIT, Target, targets, write_report


def context(rows: list[Target]) -> dict:
    return {
        "quick": True,
        "date": "today",
        "wall_minutes": 1.0,
        "machine": {},
        "seconds": 60.0,
        "reps": 1,
        "summary": {},
        "latency": {},
        "soak": None,
        "targets": rows,
        "floors": {},
        "notes": [],
        "labels": {},
    }


OLDER = """# Benchmarks

## CPU and memory

an old table

## Pi-class budget

the budget's table

## Start-up and imports

the start-up table

## Targets

old targets
"""


def test_a_full_report_keeps_the_sections_other_runs_wrote(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    report.write_text(OLDER)
    write_report(report, context([]))
    text = report.read_text()
    assert "the budget's table" in text and "the start-up table" in text
    assert "an old table" not in text and "old targets" not in text
    assert text.count("## CPU and memory") == 1 and text.count("## Pi-class budget") == 1
    assert text.index("## Pi-class budget") < text.index("## Targets")


def test_a_missed_target_is_reported_with_what_was_tried(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    key = next(iter(FINDINGS))
    write_report(report, context([Target("a target", "1 vs 2", "NO", key)]))
    text = report.read_text()
    assert "## Targets missed" in text and "### a target" in text
    assert FINDINGS[key][0] in text
    write_report(report, context([Target("a target", "1 vs 2", "yes", key)]))
    assert "## Targets missed" not in report.read_text()


def test_live_is_held_against_the_sdk_pipelines_total_in_the_same_run() -> None:
    summary = {"d-live": {"cpu": 0.42}, "sdk": {"cpu": 0.6}}
    row = next(r for r in targets(summary, {}, None, {}, {}) if r.key == "live")
    assert row.met == "yes" and row.figure.endswith(f"{0.42 / 0.6:.2f}x")
    summary["d-live"]["cpu"] = 0.6 * LIVE_TO_SDK_LIMIT + 0.01
    assert next(r for r in targets(summary, {}, None, {}, {}) if r.key == "live").met == "NO"
