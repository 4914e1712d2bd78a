"""The bench's idle rows: the daemon with the page served, no press, next to the capture floor."""

from __future__ import annotations

from pathlib import Path

from scripts.bench.runner import IDLE_ABOVE_FLOOR_LIMIT, targets, variants


def test_the_idle_rows_sit_with_the_floors_before_any_session_row() -> None:
    keys = list(variants(None, Path("mic.wav")))
    idle = keys.index("d-idle")
    assert keys[0] == "floor" and keys[idle + 1 : idle + 3] == ["d-idle-speaker", "d-idle-file"]
    assert all(k.startswith("floor") for k in keys[:idle])


def test_the_idle_rows_serve_the_page_and_never_press() -> None:
    table = variants(None, Path("mic.wav"))
    mic, speaker, file = table["d-idle"], table["d-idle-speaker"], table["d-idle-file"]
    for row in (mic, speaker, file):
        assert not row.streams and row.terminate
        assert "--web-port" in row.argv
    assert mic.floor == "floor" and "--input-file" not in mic.argv
    assert "--sink" not in mic.argv and speaker.argv[speaker.argv.index("--sink") + 1] == "pyaudio"
    assert file.argv[file.argv.index("--input-file") + 1] == "mic.wav"


def test_the_idle_target_is_the_floor_plus_its_allowance() -> None:
    floors = {"d-idle": "floor"}
    summary = {
        "floor": {"cpu": 0.2, "rss_steady": 30.0},
        "d-idle": {"cpu": 0.2 + IDLE_ABOVE_FLOOR_LIMIT + 0.05, "rss_steady": 45.0},
    }
    row = next(r for r in targets(summary, {}, None, floors, {}) if r[0].startswith("idle"))
    assert row[2] == "NO"
    summary["d-idle"]["cpu"] = 0.25
    row = next(r for r in targets(summary, {}, None, floors, {}) if r[0].startswith("idle"))
    assert row[1] == "0.05 above floor" and row[2] == "yes"
