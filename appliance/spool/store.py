"""The spool's state: one SQLite row per recording, moving through explicit states.

SQLite in WAL mode with ``synchronous=FULL``: a committed state change survives
a power cut. Every transition is a single UPDATE guarded by the state it
expects to leave (compare-and-set), so a step that already happened is never
applied twice, and a process that restarts picks up each recording where its
row says it stopped.

States::

    recording -> ready -> uploading -> uploaded -> submitting -> submitted -> completed
                      \\______________\\_____________\\______________\\-------> failed

``uploading`` and ``submitting`` are intents written *before* the network
call; see ``appliance.spool.uploader`` for how they are reconciled after a
crash.

A database that SQLite reports as damaged (not a database, malformed, failing
its quick check, read-only first so nothing of it is touched) raises
:class:`DatabaseDamaged` on open, so the spool can set it aside and rebuild it
from the audio on disk (``appliance.spool.repair``). Every other error
(read-only, unreadable) is raised as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, Unpack

RECORDING = "recording"
READY = "ready"
UPLOADING = "uploading"
UPLOADED = "uploaded"
SUBMITTING = "submitting"
SUBMITTED = "submitted"
COMPLETED = "completed"
FAILED = "failed"
STATES = (RECORDING, READY, UPLOADING, UPLOADED, SUBMITTING, SUBMITTED, COMPLETED, FAILED)
# States the uploader still has work to do in.
PENDING_STATES = (READY, UPLOADING, UPLOADED, SUBMITTING, SUBMITTED)
# States of recordings still in the spool's care (a completed one is history).
OPEN_STATES = (RECORDING, *PENDING_STATES, FAILED)
ORIGINS = ("record", "live-gap", "agent")
# The reason a recording fails with when the server cannot tell whether it accepted a
# submit; ``spool retry`` of such a row is a person's decision to submit again.
UNKNOWN_SUBMIT = "submit outcome unknown"
# SQLite's primary result codes for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB).
DAMAGE_CODES = frozenset({11, 26})
# Files SQLite keeps beside the database in WAL mode.
DB_SIDE_SUFFIXES = ("-wal", "-shm")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS recordings (
    id TEXT PRIMARY KEY,
    origin TEXT NOT NULL,
    rate INTEGER NOT NULL,
    session_id TEXT,
    session_offset INTEGER,
    started_at REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    state TEXT NOT NULL,
    data_bytes INTEGER NOT NULL DEFAULT 0,
    lost_samples INTEGER NOT NULL DEFAULT 0,
    gaps TEXT NOT NULL DEFAULT '[]',
    content_hash TEXT,
    upload_url TEXT,
    transcript_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    completed_at REAL,
    audio_deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS recordings_state ON recordings(state);
CREATE INDEX IF NOT EXISTS recordings_done ON recordings(state, audio_deleted, completed_at);
CREATE INDEX IF NOT EXISTS recordings_content ON recordings(content_hash);
CREATE TABLE IF NOT EXISTS uploads (
    content_hash TEXT PRIMARY KEY,
    upload_url TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    item_kind TEXT NOT NULL,
    item_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    payload TEXT,
    delivered_at REAL,
    PRIMARY KEY (item_kind, item_id, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(destination, state, next_attempt_at);
"""
# Each statement above is ``IF NOT EXISTS`` and runs at every open: that is the migration
# of an older database (a table added later, such as ``deliveries``, appears on its first
# open by a newer version; nothing existing is touched).

# The states of a transcript's delivery off the device (``appliance.outbox``).
DELIVERY_PENDING = "pending"
DELIVERY_DELIVERED = "delivered"
DELIVERY_FAILED = "failed"
DELIVERY_STATES = (DELIVERY_PENDING, DELIVERY_DELIVERED, DELIVERY_FAILED)


@dataclasses.dataclass(frozen=True)
class RecordingRow:
    """A snapshot of one recording's row."""

    id: str
    origin: str
    rate: int
    session_id: str | None
    session_offset: int | None
    started_at: float
    created_at: float
    updated_at: float
    state: str
    data_bytes: int
    lost_samples: int
    gaps: list[dict[str, int]]
    content_hash: str | None
    upload_url: str | None
    transcript_id: str | None
    attempts: int
    last_error: str | None
    next_attempt_at: float
    completed_at: float | None
    audio_deleted: bool

    @property
    def duration_seconds(self) -> float:
        return self.data_bytes / 2 / self.rate if self.rate else 0.0


_COLUMNS = frozenset(f.name for f in dataclasses.fields(RecordingRow))


class Columns(TypedDict, total=False):
    """Columns a write sets, as :class:`RecordingRow` names them (``gaps`` as a list or
    its JSON)."""

    id: str
    origin: str
    rate: int
    session_id: str | None
    session_offset: int | None
    started_at: float
    created_at: float
    updated_at: float
    state: str
    data_bytes: int
    lost_samples: int
    gaps: list[dict[str, int]] | str
    content_hash: str | None
    upload_url: str | None
    transcript_id: str | None
    attempts: int
    last_error: str | None
    next_attempt_at: float
    completed_at: float | None
    audio_deleted: bool


@dataclasses.dataclass(frozen=True)
class DeliveryRow:
    """One transcript's delivery to one destination (its row in ``deliveries``).

    ``destination`` is a digest of where it goes, never the URL or command itself;
    ``payload`` is the body, fixed at the first attempt so that every attempt with
    one idempotency key sends the same bytes (dropped once delivered).
    """

    item_kind: str
    item_id: str
    destination: str
    idempotency_key: str
    state: str
    created_at: float
    updated_at: float
    attempts: int
    next_attempt_at: float
    last_error: str | None
    payload: str | None
    delivered_at: float | None


class DeliveryColumns(TypedDict, total=False):
    """Columns a delivery write sets."""

    state: str
    attempts: int
    next_attempt_at: float
    last_error: str | None
    payload: str | None
    delivered_at: float | None


class StateConflict(RuntimeError):
    """A transition found the row in another state than expected (someone else moved it)."""


class DatabaseDamaged(Exception):
    """The database file is damaged; SQLite cannot be trusted with it any more."""


def is_damage(exc: BaseException) -> bool:
    """Does this SQLite error say the file itself is damaged (not merely unwritable)?"""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) in DAMAGE_CODES
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def find_damage(path: Path) -> str | None:
    """What is wrong with the database file at ``path``, or None (sound, absent, unreadable).

    Read-only, so it is safe while the daemon runs and leaves a damaged file and
    its WAL exactly as they were (a read-write open would delete an unusable WAL).
    """
    try:
        if path.stat().st_size == 0:
            return None
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    except (OSError, sqlite3.Error):
        return None
    try:
        first = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        return str(exc) if is_damage(exc) else None
    finally:
        db.close()
    verdict = first[0] if first else "no answer"
    return None if verdict == "ok" else f"fails its integrity check: {verdict}"


def _create_private(path: Path) -> None:
    """Create the database file 0600 before SQLite does (its WAL files copy its mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for name in (path.name, *(path.name + s for s in DB_SIDE_SUFFIXES)):
        with contextlib.suppress(OSError):
            path.with_name(name).chmod(0o600)


class Store:
    """Thread-safe access to the spool database (one connection, one lock).

    Raises :class:`DatabaseDamaged` when the file is damaged, sqlite3/OS errors
    when it cannot be opened for another reason.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        problem = find_damage(path)
        if problem is not None:
            raise DatabaseDamaged(f"{path.name} is damaged: {problem}")
        _create_private(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if is_damage(exc):
                raise DatabaseDamaged(f"{path.name} is damaged: {exc}") from exc
            raise
        _create_private(path)  # WAL files an older version left readable by others

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads ---------------------------------------------------------------

    def get(self, recording_id: str) -> RecordingRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM recordings WHERE id = ?", (recording_id,)
            ).fetchone()
        return _row(row) if row else None

    def all(self, states: tuple[str, ...] | None = None) -> list[RecordingRow]:
        query = "SELECT * FROM recordings"
        args: tuple[Any, ...] = ()
        if states is not None:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            args = states
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at, id", args).fetchall()
        return [_row(r) for r in rows]

    def counts(self, states: tuple[str, ...]) -> dict[str, int]:
        """How many recordings are in each of ``states`` (read from the state index)."""
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                f"SELECT state, COUNT(*) FROM recordings WHERE state IN ({marks}) GROUP BY state",
                states,
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def newest(self, states: tuple[str, ...], limit: int) -> list[RecordingRow]:
        """The ``limit`` newest recordings in ``states``, newest first."""
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM recordings WHERE state IN ({marks}) "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (*states, limit),
            ).fetchall()
        return [_row(r) for r in rows]

    def completed_with_audio(self, before: float | None = None) -> list[str]:
        """Completed recordings whose audio is still on disk (completed before ``before``)."""
        query = "SELECT id FROM recordings WHERE state = ? AND audio_deleted = 0"
        args: tuple[Any, ...] = (COMPLETED,)
        if before is not None:
            query += " AND completed_at <= ?"
            args = (COMPLETED, before)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [r[0] for r in rows]

    def purged_before(self, before: float, limit: int) -> list[str]:
        """Completed recordings without audio, completed before ``before`` (oldest first)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM recordings WHERE state = ? AND audio_deleted = 1 "
                "AND completed_at <= ? ORDER BY completed_at LIMIT ?",
                (COMPLETED, before, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def ids(self) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM recordings").fetchall()
        return {r[0] for r in rows}

    def upload_url_for(self, content_hash: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT upload_url FROM uploads WHERE content_hash = ?", (content_hash,)
            ).fetchone()
        return row[0] if row else None

    def transcript_for(self, content_hash: str) -> str | None:
        """A transcript id already obtained for identical content, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT transcript_id FROM recordings WHERE content_hash = ? "
                "AND transcript_id IS NOT NULL AND state IN (?, ?) LIMIT 1",
                (content_hash, SUBMITTED, COMPLETED),
            ).fetchone()
        return row[0] if row else None

    def submit_in_flight(self, content_hash: str, other_than: str) -> bool:
        """Is another recording with identical content between "submit sent" and "id stored"?

        Its outcome decides whether identical audio needs a submit at all, so a
        twin must wait for it rather than pay for the same transcript twice.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM recordings WHERE content_hash = ? AND id != ? AND state = ? LIMIT 1",
                (content_hash, other_than, SUBMITTING),
            ).fetchone()
        return row is not None

    # -- writes --------------------------------------------------------------

    def insert(
        self,
        recording_id: str,
        origin: str,
        rate: int,
        session_id: str | None,
        session_offset: int | None,
        started_at: float,
    ) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO recordings (id, origin, rate, session_id, session_offset, "
                "started_at, created_at, updated_at, state) VALUES (?,?,?,?,?,?,?,?,?)",
                (recording_id, origin, rate, session_id, session_offset, started_at, now, now,
                 RECORDING),
            )  # fmt: skip

    def insert_found(self, **fields: Unpack[Columns]) -> bool:
        """Insert a row rebuilt from the files on disk (every column given); False if it
        exists already."""
        if "gaps" in fields and not isinstance(fields["gaps"], str):
            fields["gaps"] = json.dumps(fields["gaps"])
        unknown = set(fields) - _COLUMNS
        if unknown:
            raise ValueError(f"no such columns: {sorted(unknown)}")
        if fields.get("state") not in STATES:
            raise ValueError(f"unknown state {fields.get('state')!r}")
        names = ", ".join(fields)
        marks = ",".join("?" * len(fields))
        with self._lock:
            cur = self._db.execute(
                f"INSERT OR IGNORE INTO recordings ({names}) VALUES ({marks})",
                tuple(fields.values()),
            )
        return cur.rowcount == 1

    def transition(
        self, recording_id: str, expect: str | tuple[str, ...], to: str, **fields: Unpack[Columns]
    ) -> None:
        """Move ``recording_id`` from a state in ``expect`` to ``to`` with ``fields`` (atomic)."""
        expected = (expect,) if isinstance(expect, str) else expect
        fields = {**fields, "state": to, "updated_at": time.time()}
        if "gaps" in fields and not isinstance(fields["gaps"], str):
            fields["gaps"] = json.dumps(fields["gaps"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        marks = ",".join("?" * len(expected))
        with self._lock:
            cur = self._db.execute(
                f"UPDATE recordings SET {sets} WHERE id = ? AND state IN ({marks})",
                (*fields.values(), recording_id, *expected),
            )
        if cur.rowcount != 1:
            raise StateConflict(f"{recording_id}: not in state {'/'.join(expected)}")

    def update(self, recording_id: str, **fields: Unpack[Columns]) -> None:
        """Set fields without a state change (counters, errors, audio_deleted)."""
        if "gaps" in fields and not isinstance(fields["gaps"], str):
            fields["gaps"] = json.dumps(fields["gaps"])
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(
                f"UPDATE recordings SET {sets} WHERE id = ?", (*fields.values(), recording_id)
            )

    def remember_upload(self, content_hash: str, upload_url: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO uploads (content_hash, upload_url, created_at) "
                "VALUES (?,?,?)",
                (content_hash, upload_url, time.time()),
            )

    def forget_upload(self, content_hash: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM uploads WHERE content_hash = ?", (content_hash,))

    def delete(self, recording_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM recordings WHERE id = ?", (recording_id,))

    def forget_unused_uploads(self) -> int:
        """Drop remembered upload URLs no recording's content refers to; how many went."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM uploads WHERE NOT EXISTS (SELECT 1 FROM recordings "
                "WHERE recordings.content_hash = uploads.content_hash)"
            )
        return cur.rowcount

    # -- deliveries (the outbox) ---------------------------------------------------

    def add_delivery(
        self, item_kind: str, item_id: str, destination: str, key: str, not_before: float = 0.0
    ) -> bool:
        """Queue one transcript for ``destination``; False if it is queued (or done) already."""
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO deliveries (item_kind, item_id, destination, "
                "idempotency_key, state, created_at, updated_at, next_attempt_at) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (item_kind, item_id, destination, key, DELIVERY_PENDING, now, now, not_before),
            )
        return cur.rowcount == 1

    def delivery(self, item_kind: str, item_id: str, destination: str) -> DeliveryRow | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM deliveries WHERE item_kind = ? AND item_id = ? AND destination = ?",
                (item_kind, item_id, destination),
            ).fetchone()
        return DeliveryRow(**dict(row)) if row else None

    def deliveries(self, limit: int | None = None) -> list[DeliveryRow]:
        """Deliveries, newest first (all, or the ``limit`` newest)."""
        query = "SELECT * FROM deliveries ORDER BY created_at DESC, item_id DESC"
        args: tuple[Any, ...] = ()
        if limit is not None:
            query += " LIMIT ?"
            args = (limit,)
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [DeliveryRow(**dict(r)) for r in rows]

    def delivery_counts(self) -> dict[str, int]:
        """How many deliveries are in each state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) FROM deliveries GROUP BY state"
            ).fetchall()
        return {r[0]: r[1] for r in rows}

    def due_deliveries(
        self, destination: str, now: float, limit: int
    ) -> tuple[list[DeliveryRow], float | None]:
        """Pending deliveries to ``destination`` due at ``now`` (oldest first), and when the
        next one not yet due is."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM deliveries WHERE destination = ? AND state = ? "
                "AND next_attempt_at <= ? ORDER BY created_at, item_id LIMIT ?",
                (destination, DELIVERY_PENDING, now, limit),
            ).fetchall()
            later = self._db.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE destination = ? "
                "AND state = ? AND next_attempt_at > ?",
                (destination, DELIVERY_PENDING, now),
            ).fetchone()
        return [DeliveryRow(**dict(r)) for r in rows], later[0] if later else None

    def update_delivery(
        self, row: DeliveryRow, expect: str, **fields: Unpack[DeliveryColumns]
    ) -> None:
        """Set ``fields`` of ``row``'s delivery if it is still in state ``expect`` (atomic)."""
        values: dict[str, Any] = {**fields, "updated_at": time.time()}
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            cur = self._db.execute(
                f"UPDATE deliveries SET {sets} WHERE item_kind = ? AND item_id = ? "
                "AND destination = ? AND state = ?",
                (*values.values(), row.item_kind, row.item_id, row.destination, expect),
            )
        if cur.rowcount != 1:
            raise StateConflict(f"{row.item_kind} {row.item_id}: delivery not {expect}")

    def retarget_deliveries(self, destination: str, key_for: Callable[[str, str], str]) -> int:
        """Move pending deliveries of another destination (the configuration changed) to
        ``destination``, each with its new key ``key_for(kind, id)``; how many moved.

        One already queued there keeps its row and the old one goes. Delivered and
        failed rows stay as they were: history of where things went.
        """
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT item_kind, item_id, destination FROM deliveries "
                    "WHERE state = ? AND destination != ?",
                    (DELIVERY_PENDING, destination),
                ).fetchall()
                for kind, item_id, old in rows:
                    self._db.execute(
                        "UPDATE OR IGNORE deliveries SET destination = ?, idempotency_key = ?, "
                        "attempts = 0, next_attempt_at = 0, payload = NULL, last_error = NULL, "
                        "updated_at = ? WHERE item_kind = ? AND item_id = ? AND destination = ?",
                        (destination, key_for(kind, item_id), now, kind, item_id, old),
                    )
                    self._db.execute(
                        "DELETE FROM deliveries WHERE item_kind = ? AND item_id = ? "
                        "AND destination = ?",
                        (kind, item_id, old),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def retry_failed_deliveries(self) -> int:
        """Send every failed delivery round again (attempts reset); how many."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE deliveries SET state = ?, attempts = 0, next_attempt_at = 0, "
                "updated_at = ? WHERE state = ?",
                (DELIVERY_PENDING, time.time(), DELIVERY_FAILED),
            )
        return cur.rowcount

    def forget_deliveries(self, before: float, limit: int) -> int:
        """Drop delivered rows delivered before ``before`` (at most ``limit``); how many."""
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries "
                "WHERE state = ? AND delivered_at <= ? LIMIT ?)",
                (DELIVERY_DELIVERED, before, limit),
            )
        return cur.rowcount


def _row(row: sqlite3.Row) -> RecordingRow:
    data = dict(row)
    data["gaps"] = json.loads(data["gaps"] or "[]")
    data["audio_deleted"] = bool(data["audio_deleted"])
    return RecordingRow(**data)
