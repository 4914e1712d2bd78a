"""``appliance sessions list|show|export`` on a device's state directory and spool."""

from __future__ import annotations

import stat

import pytest

from appliance.cli import main
from appliance.exitcodes import ExitCode

from .helpers import SESSION_ID, device_history
from .test_archive import HOSTILE_IDS


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "appliance.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nspool:\n  directory: {tmp_path / 'spool'}\n")
    return str(path)


async def test_list_shows_sessions_and_recordings_with_state(
    tmp_path, emulator, config_file, capsys
):
    _archive, _spool, rid = await device_history(tmp_path, emulator)
    assert main(["sessions", "list", "--config", config_file]) == ExitCode.OK
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["ID", "KIND", "STARTED", "STATE", "LENGTH", "AUDIO"]
    assert out[1].startswith(rid) and "completed" in out[1] and out[1].endswith("yes")
    assert out[2].startswith(SESSION_ID) and "complete" in out[2]


async def test_show_prints_speakers_and_the_timed_transcript(
    tmp_path, emulator, config_file, capsys
):
    await device_history(tmp_path, emulator)
    assert main(["sessions", "show", SESSION_ID, "--config", config_file]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"# Session {SESSION_ID}" in out
    assert "- Speakers: A, B" in out
    assert "**[00:00:04] Speaker B:** Three." in out


async def test_export_writes_a_private_file_in_the_format_asked(
    tmp_path, emulator, config_file, capsys
):
    _archive, spool, rid = await device_history(tmp_path, emulator)
    target = tmp_path / "out.srt"
    argv = ["sessions", "export", SESSION_ID, "-f", "srt", "-o", str(target), "-c", config_file]
    assert main(argv) == ExitCode.OK
    assert target.read_text().startswith("1\n00:00:01,000 --> 00:00:01,700\nSpeaker A: One, two.\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert main(["sessions", "export", rid, "--format", "vtt", "-c", config_file]) == ExitCode.OK
    assert capsys.readouterr().out == spool.artifact_path(rid, "vtt").read_text()


@pytest.mark.parametrize("value", HOSTILE_IDS[:6])
def test_an_id_from_outside_that_is_not_ours_is_a_usage_error(value, config_file, capsys):
    for action in ("show", "export"):
        assert main(["sessions", action, value, "-c", config_file]) == ExitCode.USAGE
    assert "not a session or recording id" in capsys.readouterr().err


def test_an_unknown_id_is_a_failure_that_says_so(config_file, capsys):
    assert main(["sessions", "show", "0123abcd", "-c", config_file]) == ExitCode.FAILURE
    assert "no session 0123abcd" in capsys.readouterr().err
