"""The command line: every subcommand explains itself; a broken config exits 3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.cli import build_parser, main

SUBCOMMANDS = ("run", "demo", "emulator", "devices", "check", "spool", "transcribe")


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_has_help(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", name, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: appliance {name}")


def test_top_level_help_lists_subcommands_and_exit_codes() -> None:
    text = build_parser().format_help()
    for name in SUBCOMMANDS:
        assert name in text
    assert "3  configuration error" in text


def test_broken_config_exits_with_code_3_and_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("mode: live\nlive:\n  chunk_ms: 5\n")
    assert main(["spool", "list", "--config", str(config)]) == 3
    assert f"{config}:3: live.chunk_ms: 5 is out of range" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["fly"])
    assert info.value.code == 2
