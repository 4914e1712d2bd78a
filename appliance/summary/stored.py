"""Where a summary is kept, and reading it back (exports, the history page, the outbox).

Beside its transcript, written whole or not at all (write, fsync, rename, fsync
the directory), mode 0600:

* a live session: ``<state_dir>/transcripts/<session id>.summary.json``
  (beside ``<session id>.jsonl``; history retention deletes both by age);
* a field recording: ``<spool>/audio/<recording id>/summary.json`` (beside
  ``transcript.json``; it goes when the spool forgets the recording).

Ids from outside name a file only through the checked paths of
:func:`appliance.late.session_transcript_path` and the spool's ``inside``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Literal

from appliance.late import session_transcript_path
from appliance.spool.ids import check_recording_id, inside
from appliance.spool.spool import AUDIO_DIR

Source = Literal["session", "recording"]
SOURCES: tuple[Source, ...] = ("session", "recording")
SUMMARY_NAME = "summary.json"
#: A file larger than this is not one of ours; it is not read.
MAX_SUMMARY_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True)
class StoredSummary:
    """One stored summary: what was summarised, by which model, the answer and when."""

    source: Source
    source_id: str
    model: str
    text: str
    truncated: bool
    made_at: float
    completion_id: str | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, indent=1)


@dataclasses.dataclass(frozen=True)
class SummaryPaths:
    """The two roots summaries live under (the state directory and the spool's)."""

    state_dir: Path
    spool_dir: Path

    def path(self, source: Source, source_id: str) -> Path:
        """The file of one summary; ValueError for an id that is not ours."""
        if source == "session":
            transcript = session_transcript_path(self.state_dir, source_id)
            return transcript.with_name(f"{source_id}.{SUMMARY_NAME}")
        if source == "recording":
            audio = self.spool_dir / AUDIO_DIR
            return inside(audio, check_recording_id(source_id), SUMMARY_NAME)
        raise ValueError(f"unknown summary source {source!r}")

    def store(self, summary: StoredSummary) -> Path:
        """Write ``summary`` durably (blocking); the file is whole or absent."""
        from appliance.spool.uploader import write_durably  # httpx: not for readers

        path = self.path(summary.source, summary.source_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_durably(path, summary.to_json())
        return path

    def read(self, source: Source, source_id: str) -> StoredSummary | None:
        """The stored summary, or None (none yet, an id that is not ours, a damaged file)."""
        try:
            path = self.path(source, source_id)
            with open(path, "rb") as f:
                data = f.read(MAX_SUMMARY_BYTES + 1)
        except (OSError, ValueError):
            return None
        if len(data) > MAX_SUMMARY_BYTES:
            return None
        try:
            fields = json.loads(data)
            found = StoredSummary(**fields)
        except (ValueError, TypeError):
            return None
        if found.source != source or found.source_id != source_id:
            return None
        return found


def read_summary(
    state_dir: Path, spool_dir: Path, source: Source, source_id: str
) -> StoredSummary | None:
    """The stored summary of a live session (``source="session"``) or a recording, if any."""
    return SummaryPaths(Path(state_dir), Path(spool_dir)).read(source, source_id)
