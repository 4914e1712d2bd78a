"""Everything the spool creates is private (files 0600, directories 0700) under any umask,
so a daemon started by hand, outside systemd's UMask=, keeps recordings to itself."""

from __future__ import annotations

import os
import stat

import pytest

from appliance.spool import Spool, SpoolParams
from appliance.spool import store as st
from appliance.spool.uploader import Uploader

from .helpers import client_for, corrupt_database, record_digits, upload_config


@pytest.fixture(params=[0o000, 0o022, 0o002], ids=["umask 000", "umask 022", "umask 002"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def assert_private(tmp_path, paths) -> None:
    for path in paths:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        assert mode == want, f"{path.relative_to(tmp_path)}: {oct(mode)}"


async def test_every_spool_file_is_private_whatever_the_umask(tmp_path, emulator, umask):
    root = tmp_path / "missing" / "parents" / "spool"
    parents = [tmp_path / "missing", tmp_path / "missing" / "parents"]
    params = SpoolParams(root, quota_bytes=50_000_000, min_free_bytes=0)
    spool = Spool(params)
    rid = record_digits(spool, "1 2")
    async with client_for(emulator) as client:
        await Uploader(spool, client, upload_config(), retry_base=0.05).drain(timeout=30)
    assert spool.get(rid).state == st.COMPLETED
    record_digits(spool, "3")  # one still waiting
    open_files = [*parents, root, *root.rglob("*")]
    assert {"spool.sqlite3-wal", "spool.sqlite3-shm"} <= {p.name for p in open_files}
    assert_private(tmp_path, open_files)  # while open: the WAL files too
    spool.close()
    corrupt_database(root)
    Spool(params).close()  # quarantine and rebuild create files too

    made = [*parents, root, *root.rglob("*")]
    names = {p.name for p in made}
    expected = {"spool.sqlite3", ".owner.lock", "seg-00001.wav", "recording.json", "submit.json"}
    expected |= {"transcript.json", "transcript.srt", "transcript.vtt"}
    assert expected <= names
    assert any(n.startswith("spool.sqlite3.corrupt-") for n in names)
    assert_private(tmp_path, made)
