"""Where device records live: a JSON file (distributed by config management, so replicas
stay stateless) or SQLite (one host). Both hold only salted hashes.

A revoked device keeps its record (marked with the time), so ``list`` shows it
and the name is not silently reused. The file store re-reads the file when it
changes on disk, so a replica picks up an enrolment or a revocation pushed to
it without a restart; it writes by temporary file, fsync and rename, so a
reader never sees half a file. Both are written by root (``add-device``) and
read by the service's own user, so they are world-readable: they hold salted
hashes of 256-bit secrets, which prove nothing without the secrets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from appliance.broker.credentials import HashedSecret

FILE_FORMAT_VERSION = 1
#: Largest scrypt N accepted from a store, so an edited file cannot make checks cost minutes.
MAX_SCRYPT_N = 2**16


class StoreError(Exception):
    """The store cannot be read or written, or a request to it makes no sense."""


@dataclasses.dataclass(frozen=True)
class DeviceRecord:
    name: str
    secret: HashedSecret
    created: float  # Unix time
    max_session_seconds: int | None = None  # None: the broker's default
    revoked: float | None = None  # Unix time of the revocation

    @property
    def active(self) -> bool:
        return self.revoked is None


class DeviceStore(Protocol):
    """What the broker and ``appliance broker add-device|revoke|list`` need of a store."""

    def get(self, name: str) -> DeviceRecord | None: ...

    def add(self, record: DeviceRecord) -> None: ...

    def revoke(self, name: str, when: float) -> bool: ...

    def all(self) -> list[DeviceRecord]: ...


def _to_json(record: DeviceRecord) -> dict[str, Any]:
    data = dataclasses.asdict(record)
    del data["name"]
    return data


def _from_json(name: str, data: Any) -> DeviceRecord:
    try:
        secret = HashedSecret(**data["secret"])
        record = DeviceRecord(
            name=name,
            secret=secret,
            created=float(data["created"]),
            max_session_seconds=data.get("max_session_seconds"),
            revoked=data.get("revoked"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"device {name!r}: malformed record ({exc})") from None
    if not 2 <= secret.n <= MAX_SCRYPT_N:
        raise StoreError(f"device {name!r}: scrypt N {secret.n} out of range")
    return record


class FileStore:
    """Device records in one JSON file; re-read whenever its mtime, size or inode change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._records: dict[str, DeviceRecord] = {}

    def _load(self) -> dict[str, DeviceRecord]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._records = None, {}
            return self._records
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                devices = data["devices"]
                if data.get("version") != FILE_FORMAT_VERSION or not isinstance(devices, dict):
                    raise StoreError(f"{self.path}: not a version {FILE_FORMAT_VERSION} store")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StoreError(f"{self.path}: cannot read the device store ({exc})") from None
            self._records = {name: _from_json(name, rec) for name, rec in devices.items()}
            self._stamp = stamp
        return self._records

    def _write(self, records: dict[str, DeviceRecord]) -> None:
        body = {
            "version": FILE_FORMAT_VERSION,
            "devices": {name: _to_json(rec) for name, rec in sorted(records.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".devices-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(body, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # salted hashes only; the unit's own user must read it
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._stamp = None

    def get(self, name: str) -> DeviceRecord | None:
        with self._lock:
            return self._load().get(name)

    def add(self, record: DeviceRecord) -> None:
        with self._lock:
            records = dict(self._load())
            if record.name in records:
                raise StoreError(f"device {record.name!r} exists (revoked devices keep their name)")
            records[record.name] = record
            self._write(records)

    def revoke(self, name: str, when: float) -> bool:
        with self._lock:
            records = dict(self._load())
            record = records.get(name)
            if record is None or not record.active:
                return False
            records[name] = dataclasses.replace(record, revoked=when)
            self._write(records)
            return True

    def all(self) -> list[DeviceRecord]:
        with self._lock:
            return sorted(self._load().values(), key=lambda r: r.name)


class SqliteStore:
    """Device records in SQLite, for a broker on one host.

    The rollback journal (not WAL) keeps readers free of any write: the server
    opens the file read-only while ``add-device`` and ``revoke`` write it.
    """

    _SCHEMA = """
        CREATE TABLE IF NOT EXISTS devices (
            name TEXT PRIMARY KEY,
            record TEXT NOT NULL,
            revoked REAL
        )
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            if read_only:
                # The server only reads: no journal or shared-memory file to create, so
                # its unit's user needs nothing but read access to what root enrolled.
                uri = f"{path.absolute().as_uri()}?mode=ro"
                self._db = sqlite3.connect(
                    uri, uri=True, check_same_thread=False, isolation_level=None
                )
                self._db.execute("SELECT 1 FROM devices LIMIT 1")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute(self._SCHEMA)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the device store ({exc})") from None

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from None

    def _record(self, name: str, text: str, revoked: float | None) -> DeviceRecord:
        try:
            data = json.loads(text)
        except ValueError:
            raise StoreError(f"device {name!r}: malformed record") from None
        data["revoked"] = revoked
        return _from_json(name, data)

    def get(self, name: str) -> DeviceRecord | None:
        with self._cursor() as db:
            row = db.execute(
                "SELECT record, revoked FROM devices WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else self._record(name, row[0], row[1])

    def add(self, record: DeviceRecord) -> None:
        data = _to_json(record)
        data.pop("revoked")
        with self._cursor() as db:
            try:
                db.execute(
                    "INSERT INTO devices (name, record, revoked) VALUES (?, ?, ?)",
                    (record.name, json.dumps(data), record.revoked),
                )
            except sqlite3.IntegrityError:
                raise StoreError(
                    f"device {record.name!r} exists (revoked devices keep their name)"
                ) from None

    def revoke(self, name: str, when: float) -> bool:
        with self._cursor() as db:
            cur = db.execute(
                "UPDATE devices SET revoked = ? WHERE name = ? AND revoked IS NULL", (when, name)
            )
            return cur.rowcount == 1

    def all(self) -> list[DeviceRecord]:
        with self._cursor() as db:
            rows = db.execute("SELECT name, record, revoked FROM devices ORDER BY name").fetchall()
        return [self._record(name, text, revoked) for name, text, revoked in rows]


def open_store(path: Path, *, read_only: bool = False) -> FileStore | SqliteStore:
    """SQLite for ``*.sqlite``, ``*.sqlite3`` and ``*.db``; a JSON file for anything else.
    ``read_only`` (the server) never writes; a file store is read-only by use."""
    if path.suffix in (".sqlite", ".sqlite3", ".db"):
        return SqliteStore(path, read_only=read_only)
    return FileStore(path)
