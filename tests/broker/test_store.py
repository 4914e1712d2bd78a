"""Both stores keep hashes, refuse a reused name, revoke for good and list everything."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from appliance.broker import credentials
from appliance.broker.store import (
    DeviceRecord,
    FileStore,
    SqliteStore,
    StoreError,
    open_store,
)


def record(name: str, secret: str = "s3cret-value") -> DeviceRecord:
    return DeviceRecord(name=name, secret=credentials.hash_secret(secret), created=1000.0)


@pytest.fixture(params=["devices.json", "devices.sqlite3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FileStore | SqliteStore:
    return open_store(tmp_path / request.param)


def test_open_store_picks_sqlite_by_suffix_and_a_file_otherwise(tmp_path: Path) -> None:
    assert isinstance(open_store(tmp_path / "d.sqlite3"), SqliteStore)
    assert isinstance(open_store(tmp_path / "d.db"), SqliteStore)
    assert isinstance(open_store(tmp_path / "d.json"), FileStore)


def test_an_added_device_is_found_and_active(store: FileStore | SqliteStore) -> None:
    store.add(record("room-1"))
    got = store.get("room-1")
    assert got is not None and got.active
    assert credentials.verify("s3cret-value", got.secret)
    assert store.get("room-2") is None


def test_a_name_cannot_be_enrolled_twice_even_after_revocation(
    store: FileStore | SqliteStore,
) -> None:
    store.add(record("room-1"))
    assert store.revoke("room-1", 2000.0)
    with pytest.raises(StoreError):
        store.add(record("room-1"))


def test_revoke_marks_the_device_and_a_second_revoke_is_refused(
    store: FileStore | SqliteStore,
) -> None:
    store.add(record("room-1"))
    assert store.revoke("room-1", 2000.0)
    got = store.get("room-1")
    assert got is not None and not got.active and got.revoked == 2000.0
    assert not store.revoke("room-1", 3000.0)
    assert not store.revoke("nobody", 3000.0)


def test_list_shows_active_and_revoked_in_name_order(store: FileStore | SqliteStore) -> None:
    for name in ("b", "a", "c"):
        store.add(record(name))
    store.revoke("b", 5.0)
    assert [(r.name, r.active) for r in store.all()] == [("a", True), ("b", False), ("c", True)]


def test_the_store_holds_no_secret(tmp_path: Path, store: FileStore | SqliteStore) -> None:
    store.add(record("room-1", "the-secret-itself-XYZ"))
    for path in tmp_path.iterdir():
        assert b"the-secret-itself-XYZ" not in path.read_bytes()


def test_a_replica_sees_a_file_changed_under_it(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    writer, replica = FileStore(path), FileStore(path)
    writer.add(record("room-1"))
    assert replica.get("room-1") is not None
    writer.revoke("room-1", 9.0)
    got = replica.get("room-1")
    assert got is not None and not got.active


def test_the_file_is_written_whole_and_readable_by_the_service(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    FileStore(path).add(record("room-1"))
    data = json.loads(path.read_text())
    assert data["version"] == 1 and set(data["devices"]) == {"room-1"}
    assert os.stat(path).st_mode & 0o777 == 0o644  # hashes only; the unit's user reads it
    assert [p.name for p in tmp_path.iterdir()] == ["devices.json"]  # no temporary left


def test_a_read_only_sqlite_store_sees_enrolments_and_never_writes(tmp_path: Path) -> None:
    path = tmp_path / "devices.sqlite3"
    writer = SqliteStore(path)
    writer.add(record("room-1"))
    reader = SqliteStore(path, read_only=True)
    assert reader.get("room-1") is not None
    writer.revoke("room-1", 7.0)
    got = reader.get("room-1")
    assert got is not None and not got.active
    with pytest.raises(StoreError):
        reader.add(record("room-2"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["devices.sqlite3"]


def test_a_missing_sqlite_store_is_an_error_for_the_server(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(tmp_path / "none.sqlite3", read_only=True)


def test_a_damaged_file_is_an_error_not_an_empty_fleet(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    path.write_text("{not json")
    with pytest.raises(StoreError):
        FileStore(path).get("room-1")


def test_an_edited_record_cannot_ask_for_a_ruinous_scrypt_cost(tmp_path: Path) -> None:
    path = tmp_path / "devices.json"
    FileStore(path).add(record("room-1"))
    data = json.loads(path.read_text())
    data["devices"]["room-1"]["secret"]["n"] = 2**30
    path.write_text(json.dumps(data))
    with pytest.raises(StoreError):
        FileStore(path).get("room-1")
