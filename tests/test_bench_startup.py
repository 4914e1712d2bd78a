"""The start-up report: -X importtime parsed, the costliest imports, its own section."""

from __future__ import annotations

from pathlib import Path

from scripts.bench.report import write_section
from scripts.bench.startup import HEADING, ModeStartup, parse_importtime, section, top_level

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       200 |        200 |     _json
import time:      1000 |       1200 |   json
import time:       300 |        300 |     appliance.modes
import time:      5000 |       5300 |   appliance.config
import time:      2000 |       8500 | appliance.app
some log line in between
import time:     40000 |      40000 |     numpy._core
import time:      1000 |      41000 |   numpy
"""


def test_importtime_lines_become_rows_with_their_depth() -> None:
    rows = parse_importtime(IMPORTTIME)
    assert [r.module for r in rows][:3] == ["_json", "json", "appliance.modes"]
    assert (rows[4].module, rows[4].self_us, rows[4].cumulative_us, rows[4].depth) == (
        "appliance.app",
        2000,
        8500,
        0,
    )
    assert rows[0].depth == 2


def test_the_costliest_are_the_packages_modules_and_top_level_imports() -> None:
    top = [r.module for r in top_level(parse_importtime(IMPORTTIME))]
    assert top == ["numpy", "appliance.app", "appliance.config", "json", "appliance.modes"]


def test_the_start_up_section_says_whether_ready_met_the_target(tmp_path: Path) -> None:
    fast = ModeStartup("live", ready_s=[0.3, 0.35, 0.31], rss_mb=[50.0] * 3, modules=500)
    slow = ModeStartup("agent", ready_s=[0.5, 0.6, 0.55], rss_mb=[52.0] * 3, modules=510)
    lines = section([fast, slow], 0.03, "a 2-core box", "today", "scripts/bench.py", 0.5)
    report = tmp_path / "BENCHMARKS.md"
    report.write_text("# Benchmarks\n\n## Targets\n\nkept\n")
    write_section(report, lines, HEADING)
    write_section(report, lines, HEADING)
    text = report.read_text()
    assert text.count(HEADING) == 1 and "kept" in text
    assert "| live | 3 | 0.310, 0.350 | yes |" in text
    assert "| agent | 3 | 0.550, 0.600 | NO |" in text
