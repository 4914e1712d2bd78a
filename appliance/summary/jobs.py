"""The summaries still to make: one row per session or recording, in the spool database.

The same file and rules as the spool's recordings (WAL, ``synchronous=FULL``,
every state change one compare-and-set UPDATE), in a table of its own on a
connection of its own, so a summary's state survives a power cut like a
recording's does. States::

    pending -> requesting -> completed       pending -> skipped (nothing was said)
         \\<-------/  \\------> failed -> pending (a person's retry)

``requesting`` is written *before* the request is sent. A row found there
after a restart is a request whose outcome is unknown (the gateway may have
answered and charged): it is never sent again by itself (see
``appliance.summary.worker``).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

from appliance.summary.stored import SOURCES, Source

PENDING = "pending"
REQUESTING = "requesting"
COMPLETED = "completed"
FAILED = "failed"
SKIPPED = "skipped"  # nothing was said: nothing to summarise, nothing asked
STATES = (PENDING, REQUESTING, COMPLETED, FAILED, SKIPPED)
#: The reason a request whose answer was never seen fails with (a person decides to pay again).
UNKNOWN_OUTCOME = "summary outcome unknown"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS summaries (
    source TEXT NOT NULL,
    source_id TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (source, source_id)
);
CREATE INDEX IF NOT EXISTS summaries_state ON summaries(state);
CREATE TABLE IF NOT EXISTS summary_queue (opened_at REAL NOT NULL);
"""


@dataclasses.dataclass(frozen=True)
class SummaryJob:
    """A snapshot of one summary's row."""

    source: Source
    source_id: str
    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float


class SummaryJobs:
    """Thread-safe access to the ``summaries`` table of the spool database at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT INTO summary_queue (opened_at) "
                "SELECT COALESCE((SELECT MIN(created_at) FROM summaries), ?) "
                "WHERE NOT EXISTS (SELECT 1 FROM summary_queue)",
                (time.time(),),
            )
            row = self._db.execute("SELECT MIN(opened_at) FROM summary_queue").fetchone()
        #: When summaries were first queued on this device: what came before was never meant
        #: to be summarised (sessions from before summaries were turned on are not caught up).
        self.opened_at: float = row[0]

    @classmethod
    def if_present(cls, path: Path) -> SummaryJobs | None:
        """The queue of the spool database at ``path`` if summaries were ever queued there
        (the spool commands: looking creates nothing, so it moves no one's ``opened_at``)."""
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                found = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'summaries'"
                ).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return cls(path) if found else None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, source: Source, source_id: str) -> bool:
        """Queue a summary; False if one is queued or made already (asking twice is harmless)."""
        if source not in SOURCES:
            raise ValueError(f"unknown summary source {source!r}")
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO summaries (source, source_id, state, created_at, "
                "updated_at) VALUES (?,?,?,?,?)",
                (source, source_id, PENDING, now, now),
            )
        return cur.rowcount == 1

    def get(self, source: Source, source_id: str) -> SummaryJob | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM summaries WHERE source = ? AND source_id = ?", (source, source_id)
            ).fetchone()
        return SummaryJob(**dict(row)) if row else None

    def in_states(self, *states: str) -> list[SummaryJob]:
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM summaries WHERE state IN ({marks}) ORDER BY created_at",
                states,
            ).fetchall()
        return [SummaryJob(**dict(r)) for r in rows]

    def move(
        self,
        job: SummaryJob,
        expect: str,
        to: str,
        *,
        attempts: int | None = None,
        next_attempt_at: float | None = None,
        last_error: str | None = None,
    ) -> bool:
        """Move ``job`` from ``expect`` to ``to`` (atomic); False if it was elsewhere.

        Fields not given keep their values (the last error stays until another replaces it).
        """
        sets: dict[str, object] = {"state": to, "updated_at": time.time()}
        if last_error is not None:
            sets["last_error"] = last_error
        if attempts is not None:
            sets["attempts"] = attempts
        if next_attempt_at is not None:
            sets["next_attempt_at"] = next_attempt_at
        assignments = ", ".join(f"{k} = ?" for k in sets)
        with self._lock:
            cur = self._db.execute(
                f"UPDATE summaries SET {assignments} "
                "WHERE source = ? AND source_id = ? AND state = ?",
                (*sets.values(), job.source, job.source_id, expect),
            )
        return cur.rowcount == 1

    def counts(self) -> dict[str, int]:
        """How many summaries are in each state (every state, zeros included)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM summaries GROUP BY state"
            ).fetchall()
        found = {state: n for state, n in rows}
        return {state: int(found.get(state, 0)) for state in STATES}

    def newest(self, limit: int | None = None) -> list[SummaryJob]:
        """Every summary (at most ``limit``), the most recently changed first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM summaries ORDER BY updated_at DESC LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [SummaryJob(**dict(r)) for r in rows]

    def retry(self, source: Source, source_id: str) -> bool:
        """A person's retry of a failed summary (an unknown outcome included): ask again."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE summaries SET state = ?, attempts = 0, next_attempt_at = 0, "
                "updated_at = ? WHERE source = ? AND source_id = ? AND state = ?",
                (PENDING, time.time(), source, source_id, FAILED),
            )
        return cur.rowcount == 1
