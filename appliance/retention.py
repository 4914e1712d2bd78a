"""History retention: transcripts/ and conversations/ files stay within their age and size.

Every live session writes ``<state_dir>/transcripts/<session>.jsonl`` and every
conversation ``<state_dir>/conversations/<time>.jsonl``; on a device that runs
for months they would fill the card. :class:`HistoryRetention` deletes the
files older than ``history.retention_days`` and, past ``history.max_bytes``
for both folders together, the oldest first. Age is the time of the last
write, so a file a late transcript joined recently counts as recent. A file
written in the last ``keep_recent_seconds`` is never deleted: it belongs to a
session in progress (the local page shows its turns from memory, and a late
transcript may still join it); the size cap can therefore be passed by at
most what that window wrote.

The rule (:func:`files_to_delete`) is pure and takes the time; listing and
deleting run on a worker thread, at start and then every
``history.check_interval_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.config import Config, HistoryConfig

log = logging.getLogger(__name__)

#: The folders under the state directory whose files this keeps bounded.
HISTORY_DIRS = ("transcripts", "conversations")
#: Only these files are ever deleted (every other name is not ours).
HISTORY_SUFFIX = ".jsonl"
#: A live session's summary beside its JSONL (``appliance.summary.stored``) goes by age too.
SUMMARY_SUFFIX = ".summary.json"
#: A file written this recently is a session in progress: never deleted.
DEFAULT_KEEP_RECENT_SECONDS = 600.0


@dataclasses.dataclass(frozen=True)
class RetentionLimits:
    """How much history is kept (``None``: no limit of that kind); defaults: ``HistoryConfig``."""

    max_age_seconds: float | None
    max_bytes: int | None
    keep_recent_seconds: float = DEFAULT_KEEP_RECENT_SECONDS

    @classmethod
    def from_config(cls, history: HistoryConfig) -> RetentionLimits:
        """From a :class:`appliance.config.HistoryConfig`."""
        days = history.retention_days
        return cls(
            max_age_seconds=None if days is None else float(days) * 86400.0,
            max_bytes=history.max_bytes,
        )


@dataclasses.dataclass(frozen=True)
class HistoryFile:
    path: Path
    mtime: float  # time.time() of the last write
    size: int  # bytes on disk


def files_to_delete(
    files: Iterable[HistoryFile], limits: RetentionLimits, now: float
) -> list[HistoryFile]:
    """The files to delete so the rest fit ``limits`` at ``now``: too old, then oldest first."""
    ordered = sorted(files, key=lambda f: (f.mtime, str(f.path)))
    doomed: list[HistoryFile] = []
    kept: list[HistoryFile] = []
    for f in ordered:
        recent = now - f.mtime < limits.keep_recent_seconds
        too_old = limits.max_age_seconds is not None and now - f.mtime > limits.max_age_seconds
        (doomed if too_old and not recent else kept).append(f)
    if limits.max_bytes is not None:
        total = sum(f.size for f in kept)
        for f in kept:
            if total <= limits.max_bytes:
                break
            if now - f.mtime < limits.keep_recent_seconds:
                break  # ordered by time: every later file is recent too
            doomed.append(f)
            total -= f.size
    return doomed


@dataclasses.dataclass
class RetentionPass:
    """What one pass found and did."""

    files: int = 0
    bytes: int = 0
    deleted: int = 0
    freed: int = 0


class HistoryRetention:
    """Keeps the history folders under one state directory within :class:`RetentionLimits`."""

    def __init__(
        self,
        state_dir: Path,
        limits: RetentionLimits,
        *,
        interval_seconds: float,
        folders: Sequence[str] = HISTORY_DIRS,
    ) -> None:
        self.directories = [Path(state_dir) / name for name in folders]
        self.limits = limits
        self.interval_seconds = interval_seconds
        self.passes = 0

    @classmethod
    def from_config(cls, config: Config) -> HistoryRetention:
        """From an :class:`appliance.config.Config` (its ``history`` section and state dir)."""
        return cls(
            config.state_path,
            RetentionLimits.from_config(config.history),
            interval_seconds=config.history.check_interval_seconds,
        )

    def scan(self) -> list[HistoryFile]:
        """Every history file now (blocking: directory listing and stat)."""
        found = []
        for directory in self.directories:
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.name.endswith((HISTORY_SUFFIX, SUMMARY_SUFFIX)):
                    continue
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if entry.is_file(follow_symlinks=False):
                        found.append(HistoryFile(Path(entry.path), st.st_mtime, st.st_blocks * 512))
        return found

    def enforce(self, now: float | None = None) -> RetentionPass:
        """One pass (blocking: call it on a worker thread)."""
        now = time.time() if now is None else now
        files = self.scan()
        result = RetentionPass(files=len(files), bytes=sum(f.size for f in files))
        for f in files_to_delete(files, self.limits, now):
            try:
                f.path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot delete old history file %s: %s", f.path, exc)
                continue
            result.deleted += 1
            result.freed += f.size
        self.passes += 1
        if result.deleted:
            log.info(
                "history: deleted %d old file(s), %.1f MB; %.1f MB kept",
                result.deleted,
                result.freed / 1e6,
                (result.bytes - result.freed) / 1e6,
            )
        return result

    async def run(self) -> None:
        """Enforce now and then every ``interval_seconds``, off the event loop (cancel to stop)."""
        while True:
            try:
                await asyncio.to_thread(self.enforce)
            except Exception:
                log.exception("history retention pass failed")
            await asyncio.sleep(self.interval_seconds)
