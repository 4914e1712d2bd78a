"""``appliance broker add-device|list|revoke``: the credential is printed once, never stored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.broker import credentials
from appliance.broker.store import open_store


def broker(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", "broker", "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("name", ["devices.json", "devices.sqlite3"])
def test_add_list_revoke(tmp_path: Path, name: str) -> None:
    store = tmp_path / name
    added = broker(store, "add-device", "kiosk-7", "--max-session-seconds", "600")
    assert added.returncode == 0, added.stderr
    credential = added.stdout.strip()
    device, secret = credentials.split_credential(credential) or ("", "")
    assert device == "kiosk-7" and len(secret) >= 40
    assert secret not in store.read_bytes().decode("latin-1")
    record = open_store(store).get("kiosk-7")
    assert record is not None and record.max_session_seconds == 600
    assert credentials.verify(secret, record.secret)

    assert broker(store, "add-device", "kiosk-7").returncode == 1  # a name is enrolled once
    listing = broker(store, "list").stdout
    assert "kiosk-7" in listing and "active" in listing and secret not in listing
    assert broker(store, "revoke", "kiosk-7").returncode == 0
    assert "revoked" in broker(store, "list").stdout
    assert broker(store, "revoke", "kiosk-7").returncode == 1


def test_a_bad_name_is_a_usage_error(tmp_path: Path) -> None:
    assert broker(tmp_path / "d.json", "add-device", "has space").returncode == 2
    assert not (tmp_path / "d.json").exists()


def test_serving_without_a_key_says_where_it_looked(tmp_path: Path) -> None:
    env_free = subprocess.run(
        [sys.executable, "-m", "appliance", "broker", "--store", str(tmp_path / "d.json")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert env_free.returncode == 3
    assert "no AssemblyAI key" in env_free.stderr
