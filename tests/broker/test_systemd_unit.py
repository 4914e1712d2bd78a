"""The broker's unit: systemd accepts it, its sandbox scores at most 2.0, and the code runs
under the rules it sets (no writable executable memory)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.device.test_systemd_unit import ANALYZE_TIMEOUT, EXPOSURE_THRESHOLD, directives

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "appliance-broker.service"

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing (Debian package 'systemd'; scripts/bootstrap.sh --test)",
)


@needs_analyze
def test_broker_unit_verifies_clean(tmp_path: Path) -> None:
    binary = tmp_path / "appliance"
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    text = UNIT.read_text()
    assert "ExecStart=/opt/appliance/venv/bin/appliance broker serve" in text
    (tmp_path / UNIT.name).write_text(
        text.replace("/opt/appliance/venv/bin/appliance", str(binary))
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", UNIT.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT,
    )
    complaints = [
        line for line in result.stderr.splitlines() if UNIT.name in line or "Unknown" in line
    ]
    assert result.returncode == 0, result.stderr
    assert complaints == [], result.stderr


@needs_analyze
def test_broker_unit_sandbox_exposure_is_at_most_two() -> None:
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            f"--threshold={EXPOSURE_THRESHOLD}",
            str(UNIT),
        ],
        capture_output=True,
        text=True,
        timeout=ANALYZE_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert score is not None, result.stdout[-500:]
    assert float(score.group(1)) <= EXPOSURE_THRESHOLD / 10


def test_broker_unit_holds_the_key_as_a_credential_and_listens_on_loopback() -> None:
    d = directives(UNIT.read_text())
    assert any(v.startswith("assemblyai-api-key:") for v in d["LoadCredentialEncrypted"])
    assert "--host 127.0.0.1" in d["ExecStart"][0]  # TLS is the reverse proxy's job
    assert d["DynamicUser"] == ["yes"] and d["StateDirectory"] == ["appliance-broker"]
    store = d["Environment"][-1].partition("=")[2]
    assert store.startswith("/var/lib/appliance-broker/")
    assert "Environment" in d and not any("ASSEMBLYAI" in v for v in d["Environment"])


MDWE_PROBE = textwrap.dedent(
    """
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
        sys.exit(77)
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit(78)
    except PermissionError:
        pass
    import asyncio, ssl, sqlite3, tempfile, pathlib
    import httpx, uvicorn
    from appliance.broker import credentials
    from appliance.broker.server import BrokerThread, build_app, upstream_urls
    from appliance.broker.store import open_store
    from appliance.secrets import Secret
    ssl.create_default_context()
    secret = credentials.new_secret()
    assert credentials.verify(secret, credentials.hash_secret(secret))
    with tempfile.TemporaryDirectory() as d:
        store = open_store(pathlib.Path(d) / "devices.sqlite3")
        app = build_app(store, Secret("k" * 32), upstream_urls(base_url="http://127.0.0.1:9"))
        with BrokerThread(app) as thread:
            assert httpx.get(thread.base_url + "/healthz").status_code == 200
    print("ok")
    """
)


def test_the_broker_runs_without_writable_executable_memory(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(MDWE_PROBE)
    result = subprocess.run(
        [sys.executable, str(probe)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode == 77:
        pytest.skip("kernel has no PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
