"""Where past sessions and recordings are, read-only: the one door the CLI and the page use.

Live sessions are ``<state_dir>/transcripts/<session id>.jsonl``; recordings
are the spool's rows and the transcript files beside their audio. Every id
that comes from outside (a command-line argument, a URL) is checked against
the shape of ours before it names anything, and every path is re-checked to
stay inside its directory, so ``../`` or an absolute path never reads a file
elsewhere. The spool is opened as a viewer (no lock, no recovery): safe while
the daemon runs.

A session's state says what is still to come: ``in progress`` (the daemon's
current session), ``waiting for late audio`` (spooled gaps not transcribed
yet), ``gaps failed`` or ``complete``. A recording's state is its spool state.

Summaries come from ``summaries``, a callable given the kind and id; its answer
is read defensively (:func:`~appliance.transcripts.model.summary_from`) and
its failure is logged, never the page's or the command's.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.late import LIVE_GAP_ORIGIN, session_transcript_path
from appliance.spool import store as st
from appliance.spool.ids import RECORDING_ID_RE, InvalidId, inside
from appliance.transcripts import exports
from appliance.transcripts.model import (
    Kind,
    Summary,
    Transcript,
    recording_from_api,
    session_from_lines,
    summary_from,
)

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.spool.spool import Spool

log = logging.getLogger(__name__)

#: Ours: ``live.LiveTranscription`` names sessions with hex (``late.session_transcript_path``).
SESSION_ID_RE = re.compile(r"^[0-9a-f]{1,64}$")
TRANSCRIPTS_DIR = "transcripts"
#: Enough of a session file's first line to find its start time.
FIRST_LINE_BYTES = 64 * 1024

IN_PROGRESS = "in progress"
WAITING = "waiting for late audio"
GAPS_FAILED = "gaps failed"
COMPLETE = "complete"

#: (kind, id) -> the stored summary in any plain shape, or None (``appliance.summary``'s
#: ``read_summary`` in a configured device).
SummaryReader = Callable[[Kind, str], object]


def no_summaries(kind: Kind, item_id: str) -> object:
    return None


class NotFound(LookupError):
    """No session or recording has this id (or it has nothing of that kind)."""


def parse_id(value: object) -> tuple[Kind, str]:
    """(kind, id) of a well-formed session or recording id, else InvalidId."""
    if isinstance(value, str):
        if RECORDING_ID_RE.fullmatch(value):
            return "recording", value
        if SESSION_ID_RE.fullmatch(value):
            return "session", value
    raise InvalidId(f"not a session or recording id: {str(value)[:80]!r}")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One line of the history list."""

    kind: Kind
    id: str
    started_at: float | None
    updated_at: float
    state: str
    origin: str | None = None
    duration_seconds: float | None = None
    audio: bool = False


@dataclasses.dataclass(frozen=True)
class Audio:
    """A recording's audio as one WAV, read in chunks."""

    size: int
    chunks: Iterator[bytes]


class Archive:
    """Read-only access to what the device kept of past sessions and recordings."""

    def __init__(
        self,
        state_dir: Path,
        spool: Callable[[], Spool | None],
        *,
        summaries: SummaryReader = no_summaries,
        caption_limits: exports.CaptionLimits = exports.DEFAULT_CAPTION_LIMITS,
    ) -> None:
        self.state_dir = Path(state_dir)
        self._spool = spool
        self._summaries = summaries
        self.caption_limits = caption_limits

    @classmethod
    def from_config(cls, config: Config, spool_open: Spool | None = None) -> Archive:
        """The archive of a configured device; the spool is opened (as a viewer) on first use,
        unless the caller's process holds it open already (``spool_open``: the daemon's)."""
        from appliance.config import caption_limits
        from appliance.spool.spool import Spool, SpoolError

        opened: list[Spool] = [] if spool_open is None else [spool_open]

        def spool() -> Spool | None:
            if not opened:
                try:
                    opened.append(Spool(config, owner=False))
                except SpoolError as exc:
                    log.warning("history: the spool is unavailable: %s", exc)
                    return None
            return opened[0]

        from appliance.summary.stored import read_summary

        def summaries(kind: Kind, item_id: str) -> object:
            return read_summary(config.state_path, config.spool_path, kind, item_id)

        return cls(
            config.state_path,
            spool,
            summaries=summaries,
            caption_limits=caption_limits(config.exports),
        )

    # -- listing --------------------------------------------------------------

    def entries(self, limit: int | None = None, live: str | None = None) -> list[Entry]:
        """Sessions and recordings, newest first (at most ``limit``); ``live`` is the
        session the daemon is running now, if any."""
        rows = self._rows()
        found = [self._session_entry(path, rows, live) for path in self._session_files()]
        found += [
            Entry(
                "recording",
                row.id,
                row.started_at,
                row.updated_at,
                row.state,
                row.origin,
                row.duration_seconds,
                self._has_audio(row),
            )
            for row in rows
            if row.origin != LIVE_GAP_ORIGIN
        ]
        found.sort(key=lambda e: e.started_at or e.updated_at, reverse=True)
        return found if limit is None else found[:limit]

    def _rows(self) -> list[st.RecordingRow]:
        spool = self._spool()
        return spool.list() if spool is not None else []

    def _session_files(self) -> list[Path]:
        folder = self.state_dir / TRANSCRIPTS_DIR
        try:
            names = [p for p in folder.iterdir() if p.suffix == ".jsonl"]
        except OSError:
            return []
        return [p for p in names if SESSION_ID_RE.fullmatch(p.stem) and p.is_file()]

    def _session_entry(self, path: Path, rows: list[st.RecordingRow], live: str | None) -> Entry:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline(FIRST_LINE_BYTES)
        started = session_from_lines(path.stem, [first], "").started_at
        return Entry(
            "session",
            path.stem,
            started,
            path.stat().st_mtime,
            self._session_state(path.stem, rows, live),
        )

    def _session_state(self, session_id: str, rows: list[st.RecordingRow], live: str | None) -> str:
        if session_id == live:
            return IN_PROGRESS
        gaps = [r.state for r in rows if r.origin == LIVE_GAP_ORIGIN and r.session_id == session_id]
        if any(s not in (st.COMPLETED, st.FAILED) for s in gaps):
            return WAITING
        if st.FAILED in gaps:
            return GAPS_FAILED
        return COMPLETE

    def _has_audio(self, row: st.RecordingRow) -> bool:
        spool = self._spool()
        return (
            spool is not None
            and row.state != st.RECORDING
            and not row.audio_deleted
            and bool(spool.segments(row.id))
        )

    # -- one item -------------------------------------------------------------

    def _summary(self, kind: Kind, item_id: str) -> Summary | None:
        try:
            return summary_from(self._summaries(kind, item_id))
        except Exception as exc:  # another part's store: its trouble shows as no summary
            log.warning("history: the summary of %s %s could not be read: %r", kind, item_id, exc)
            return None

    def _row(self, recording_id: str) -> st.RecordingRow:
        spool = self._spool()
        row = spool.get(recording_id) if spool is not None else None
        if row is None:
            raise NotFound(f"no recording {recording_id}")
        return row

    def _session_path(self, session_id: str) -> Path:
        path = session_transcript_path(self.state_dir, session_id)
        return inside(self.state_dir / TRANSCRIPTS_DIR, path.name)

    def transcript(self, item_id: str, live: str | None = None) -> Transcript:
        """The session's or recording's transcript (InvalidId, NotFound)."""
        kind, item_id = parse_id(item_id)
        if kind == "session":
            path = self._session_path(item_id)
            try:
                with open(path, encoding="utf-8", errors="replace") as f:
                    lines = f.readlines()
            except FileNotFoundError:
                raise NotFound(f"no session {item_id}") from None
            state = self._session_state(item_id, self._rows(), live)
            return session_from_lines(item_id, lines, state, self._summary(kind, item_id))
        row = self._row(item_id)
        data = self._recording_json(row.id)
        return recording_from_api(
            row.id, data, row.state, row.started_at, self._summary(kind, item_id)
        )

    def entry(self, item_id: str, live: str | None = None) -> Entry:
        kind, item_id = parse_id(item_id)
        for e in self.entries(live=live):
            if e.kind == kind and e.id == item_id:
                return e
        if kind == "recording":  # a live session's gap: not listed, still shown
            row = self._row(item_id)
            return Entry(
                "recording",
                row.id,
                row.started_at,
                row.updated_at,
                row.state,
                row.origin,
                row.duration_seconds,
                self._has_audio(row),
            )
        raise NotFound(f"no session {item_id}")

    def _recording_json(self, recording_id: str) -> dict[str, object] | None:
        import json

        spool = self._spool()
        if spool is None:
            return None
        try:
            text = spool.artifact_path(recording_id, "json").read_text(encoding="utf-8")
            data = json.loads(text)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("history: transcript of %s unreadable: %s", recording_id, exc)
            return None
        return data if isinstance(data, dict) else None

    def export(self, item_id: str, fmt: str) -> tuple[str, str]:
        """(file name, text) of one export. A recording's SRT and VTT are the API's own,
        as the uploader stored them; made here from its words only if they are missing."""
        if fmt not in exports.FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(exports.FORMATS)}")
        transcript = self.transcript(item_id)
        name = f"{transcript.kind}-{transcript.id}.{fmt}"
        if transcript.kind == "recording" and fmt in ("srt", "vtt"):
            spool = self._spool()
            if spool is not None:
                try:
                    return name, spool.artifact_path(transcript.id, fmt).read_text("utf-8")
                except FileNotFoundError:
                    pass
            if not transcript.utterances:
                raise NotFound(f"recording {transcript.id} has no transcript yet")
        return name, exports.render(transcript, fmt, self.caption_limits)

    def audio(self, item_id: str) -> Audio:
        """A recording's audio while the spool keeps it (NotFound after it is deleted)."""
        kind, item_id = parse_id(item_id)
        if kind != "recording":
            raise NotFound("a live session's audio is not kept (only its undelivered gaps)")
        row = self._row(item_id)
        spool = self._spool()
        if spool is None or not self._has_audio(row):
            raise NotFound(f"the audio of {row.id} is no longer kept")
        return Audio(spool.upload_size(row.id), spool.upload_chunks_sync(row.id, row.rate))
