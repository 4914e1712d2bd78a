"""History files stay within their age and size limits, and a session in progress keeps its file."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from appliance.retention import HistoryFile, HistoryRetention, RetentionLimits, files_to_delete

DAY = 86400.0
NOW = 1_000 * DAY


def f(name: str, age: float, size: int = 100) -> HistoryFile:
    return HistoryFile(Path(name), NOW - age, size)


def names(files: list[HistoryFile]) -> list[str]:
    return [str(x.path) for x in files]


def test_files_older_than_the_retention_go() -> None:
    limits = RetentionLimits(max_age_seconds=30 * DAY, max_bytes=None)
    files = [f("old", 31 * DAY), f("edge", 30 * DAY), f("new", DAY)]
    assert names(files_to_delete(files, limits, NOW)) == ["old"]


def test_past_the_size_cap_the_oldest_go_first() -> None:
    limits = RetentionLimits(max_age_seconds=None, max_bytes=250)
    files = [f("b", 2 * DAY), f("a", 3 * DAY), f("d", 1000.0), f("c", DAY)]
    assert names(files_to_delete(files, limits, NOW)) == ["a", "b"]


def test_a_file_written_recently_is_kept_past_either_limit() -> None:
    limits = RetentionLimits(max_age_seconds=DAY, max_bytes=100, keep_recent_seconds=600.0)
    files = [f("writing", 599.0, 500), f("done", 601.0, 100), f("older", 700.0, 100)]
    assert names(files_to_delete(files, limits, NOW)) == ["older", "done"]


def test_no_limits_keep_everything() -> None:
    limits = RetentionLimits(max_age_seconds=None, max_bytes=None)
    assert files_to_delete([f("x", 3650 * DAY, 10**9)], limits, NOW) == []


def write(path: Path, size: int, age: float, now: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age, now - age))


def test_a_pass_deletes_only_history_files_and_the_state_dir_fits_its_cap(tmp_path: Path) -> None:
    now = 2_000_000_000.0
    for i in range(30):
        write(tmp_path / "transcripts" / f"{i:02x}.jsonl", 40_000, age=3600.0 * (i + 1), now=now)
        write(tmp_path / "conversations" / f"c{i}.jsonl", 40_000, age=3600.0 * i + 1800, now=now)
    write(tmp_path / "transcripts" / "notes.txt", 10, age=100 * DAY, now=now)
    write(tmp_path / "spool" / "old.jsonl", 10, age=100 * DAY, now=now)
    limits = RetentionLimits(max_age_seconds=20 * 3600.0, max_bytes=1_000_000)
    retention = HistoryRetention(tmp_path, limits, interval_seconds=60.0)
    result = retention.enforce(now)
    assert result.files == 60 and result.deleted > 0
    left = retention.scan()
    assert sum(x.size for x in left) <= 1_000_000
    assert all(now - x.mtime <= 20 * 3600.0 for x in left)
    assert (tmp_path / "transcripts" / "notes.txt").exists()
    assert (tmp_path / "spool" / "old.jsonl").exists()
    assert (tmp_path / "transcripts" / "00.jsonl").exists()  # the newest stays


def test_run_enforces_at_start_without_waiting_for_the_interval(tmp_path: Path) -> None:
    write(tmp_path / "transcripts" / "a.jsonl", 10, age=10 * DAY, now=time.time())
    retention = HistoryRetention(
        tmp_path, RetentionLimits(max_age_seconds=DAY, max_bytes=None), interval_seconds=3600.0
    )

    async def main() -> None:
        task = asyncio.create_task(retention.run())
        for _ in range(200):
            if retention.passes:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert retention.passes == 1
    assert not (tmp_path / "transcripts" / "a.jsonl").exists()
