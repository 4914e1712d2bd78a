"""scripts/install.sh: shellcheck clean, dry runs change nothing, re-runs are idempotent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install.sh"
TIMEOUT = 60
FAKE_KEY = "sk-test-0123456789abcdef"


def install(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=TIMEOUT,
    )


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


SHELL_SCRIPTS = [SCRIPT, *sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_is_clean(script: Path) -> None:
    result = subprocess.run(
        ["shellcheck", str(script)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stdout


def test_dry_run_into_scratch_root_plans_everything_and_changes_nothing(tmp_path: Path) -> None:
    result = install("--root", str(tmp_path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) == []
    plan = result.stdout
    assert f"python3 -m venv --system-site-packages {tmp_path}/opt/appliance/venv" in plan
    assert f"pip install --quiet --upgrade {ROOT}" in plan
    assert f"{tmp_path}/etc/systemd/system/appliance.service" in plan
    assert f"{tmp_path}/etc/appliance/config.yaml" in plan
    assert f"systemctl --root={tmp_path} enable appliance.service" in plan


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl not installed")
def test_scratch_root_install_is_idempotent_and_uninstall_keeps_data(tmp_path: Path) -> None:
    result = install("--root", str(tmp_path), "--no-venv")
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "etc/systemd/system/appliance.service"
    config = tmp_path / "etc/appliance/config.yaml"
    assert unit.read_text() == (ROOT / "systemd/appliance.service").read_text()
    assert config.read_text() == (ROOT / "config/appliance.yaml").read_text()
    assert (tmp_path / "etc/systemd/system/multi-user.target.wants/appliance.service").is_symlink()

    # The owner edits the config; installing again (an update) must not overwrite it.
    config.write_text("mode: record\n")
    again = install("--root", str(tmp_path), "--no-venv")
    assert again.returncode == 0, again.stderr
    assert config.read_text() == "mode: record\n"
    assert "keeping existing" in again.stdout

    recordings = tmp_path / "var/lib/appliance/spool"
    recordings.mkdir(parents=True)
    (recordings / "take1.wav").write_bytes(b"RIFF")
    removed = install("--root", str(tmp_path), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert not (tmp_path / "etc/systemd/system/multi-user.target.wants/appliance.service").exists()
    assert config.exists() and (recordings / "take1.wav").exists()

    purged = install("--root", str(tmp_path), "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not config.exists() and not recordings.exists()


def test_the_key_is_read_from_a_file_or_stdin_and_never_shown(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(FAKE_KEY + "\n")
    result = install("--dry-run", "--no-packages", "--no-venv", "--api-key-file", str(key_file))
    assert result.returncode == 0, result.stderr
    assert "systemd-creds encrypt --name=assemblyai-api-key - " in result.stdout
    assert f"< {key_file}" in result.stdout
    assert FAKE_KEY not in result.stdout + result.stderr

    piped = install("--dry-run", "--no-packages", "--no-venv", "--api-key-stdin", stdin=FAKE_KEY)
    assert piped.returncode == 0, piped.stderr
    assert FAKE_KEY not in piped.stdout + piped.stderr


def test_there_is_no_way_to_pass_the_key_in_argv() -> None:
    result = install("--dry-run", "--api-key", FAKE_KEY)
    assert result.returncode == 2
    assert FAKE_KEY not in result.stdout + result.stderr
