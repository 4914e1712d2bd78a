"""Small helpers shared by the spool tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance import dtmf
from appliance.cloud.rest import RestClient, RestTimeouts
from appliance.config import UploadConfig
from appliance.secrets import Secret
from appliance.spool import Spool, SpoolParams

RATE = 16000


def upload_config(**kw) -> UploadConfig:
    """The daemon's upload settings, polled fast for tests; ``kw`` overrides any of them."""
    return UploadConfig(**{"poll_seconds": 0.1, "write_timeout_seconds": 30.0, **kw})


def make_spool(tmp_path: Path, **kw) -> Spool:
    base = dict(directory=tmp_path / "spool", quota_bytes=50_000_000, min_free_bytes=0)
    base.update(kw)
    return Spool(SpoolParams(**base))


def client_for(emulator, **kw) -> RestClient:
    timeouts = RestTimeouts(connect=2, read=kw.pop("read", 5), write=5, pool=2)
    return RestClient(emulator.http_url, Secret(emulator.api_key), timeouts=timeouts, **kw)


def record_digits(spool: Spool, digits: str, origin: str = "record", **kw) -> str:
    audio = dtmf.generate(digits, RATE)
    writer = spool.open_recording(origin, RATE, **kw)
    for start in range(0, len(audio), 1600):
        writer.write(audio[start : start + 1600])
    return writer.close()


def api_requests(emulator, path_prefix: str = "/v2/") -> int:
    return sum(1 for _m, p, _s in emulator.state.http_requests if p.startswith(path_prefix))


def corrupt_database(spool_dir: Path, how: str = "garbage") -> bytes:
    """Damage ``spool.sqlite3`` in place, as a bad SD card or a torn write would; return
    its new bytes. ``garbage``: not a database at all; ``pages``: a valid header over
    overwritten pages (SQLite says "malformed")."""
    db = spool_dir / "spool.sqlite3"
    if how == "garbage":
        data = b"this is no longer a database " * 200
    else:
        import sqlite3

        con = sqlite3.connect(db)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()
        data = bytearray(db.read_bytes())
        data[100:] = b"\xab" * (len(data) - 100)
        data = bytes(data)
    db.write_bytes(data)
    return data


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make ``directory`` (already populated) read-only for this process, even as root:
    a read-only tmpfs with the same files mounted over it (root), else mode 0500."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    copy = directory.with_name(directory.name + ".ro-copy")
    shutil.copytree(directory, copy)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(directory)],
        capture_output=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        shutil.copytree(copy, directory, dirs_exist_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
        shutil.rmtree(copy, ignore_errors=True)
