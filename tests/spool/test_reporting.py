"""How a damaged or unusable spool is reported: ``appliance spool``, ``appliance check``,
the STATUS= line and the status page's spool part. One table row per kind of damage."""

from __future__ import annotations

import io

import pytest

from appliance.check import FAIL, OK, WARN, Report, check_spool
from appliance.cli import main
from appliance.config import Config
from appliance.events import SpoolStatus, StateChanged
from appliance.service import StatusTracker
from appliance.spool import Spool, SpoolParams
from appliance.spool.repair import quarantine
from appliance.web.snapshot import spool_section, spool_unavailable

from .helpers import corrupt_database, read_only, record_digits


def populated(tmp_path) -> None:
    spool = Spool(SpoolParams(tmp_path / "spool", min_free_bytes=0))
    record_digits(spool, "1")
    spool.close()


def break_spool(tmp_path, damage: str):
    """Damage the spool at tmp_path/spool; return a context manager that holds it broken."""
    import contextlib

    populated(tmp_path)
    if damage == "corrupt database":
        corrupt_database(tmp_path / "spool")
    elif damage == "database is a directory":
        (tmp_path / "spool" / "spool.sqlite3").unlink()
        (tmp_path / "spool" / "spool.sqlite3").mkdir()
    elif damage == "read-only directory":
        return read_only(tmp_path / "spool")
    return contextlib.nullcontext()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(f"spool:\n  directory: {tmp_path / 'spool'}\n  min_free_bytes: 0\n")
    return path


# damage -> what ``appliance spool list`` says on stderr.
SPOOL_LIST_ROWS = [
    pytest.param("corrupt database", "sets it aside and rebuilds it", id="corrupt database"),
    pytest.param("read-only directory", "Read-only file system", id="read-only directory"),
    pytest.param("database is a directory", "unable to open", id="database is a directory"),
]


@pytest.mark.parametrize(("damage", "said"), SPOOL_LIST_ROWS)
@pytest.mark.parametrize("action", [["list"], ["retry", "--all"], ["purge", "--completed"]])
def test_spool_commands_on_a_broken_spool_say_why_without_a_traceback(
    tmp_path, config_file, capsys, damage, said, action
):
    if damage == "read-only directory" and __import__("os").geteuid() != 0:
        pytest.skip("needs a read-only mount")
    with break_spool(tmp_path, damage):
        capsys.readouterr()  # only what the command says (not an earlier test's log handler)
        code = main(["spool", *action, "-c", str(config_file)])
        out, err = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in out + err and out == ""
    (line,) = err.strip().splitlines()
    assert line.startswith("spool unavailable: ") and said in line


def test_spool_list_on_a_spool_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "spool").write_text("not a directory")
    config = tmp_path / "config.yaml"
    config.write_text(f"spool:\n  directory: {tmp_path / 'spool'}\n")
    assert main(["spool", "list", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("spool unavailable: Not a directory") and "Traceback" not in err


# damage -> the mark and words of ``appliance check``.
CHECK_ROWS = [
    pytest.param("corrupt database", WARN, "spool database: damaged", id="corrupt database"),
    pytest.param("read-only directory", FAIL, "spool: unavailable", id="read-only directory"),
]


@pytest.mark.parametrize(("damage", "mark", "said"), CHECK_ROWS)
def test_check_says_the_spool_is_unavailable_and_why(tmp_path, damage, mark, said):
    if damage == "read-only directory" and __import__("os").geteuid() != 0:
        pytest.skip("needs a read-only mount")
    config = Config()
    config.spool.directory = tmp_path / "spool"
    config.spool.min_free_bytes = 0
    out = io.StringIO()
    with break_spool(tmp_path, damage):
        check_spool(Report(out), config)
    assert f"{mark} {said}" in out.getvalue()


def test_check_names_a_database_set_aside_earlier(tmp_path):
    populated(tmp_path)
    kept = quarantine(tmp_path / "spool" / "spool.sqlite3")
    Spool(SpoolParams(tmp_path / "spool", min_free_bytes=0)).close()
    config = Config()
    config.spool.directory = tmp_path / "spool"
    config.spool.min_free_bytes = 0
    out = io.StringIO()
    check_spool(Report(out), config)
    text = out.getvalue()
    assert text.startswith(f"{OK} spool:") and "spool database: damaged" not in text
    assert f"set aside as {kept}" in text


# Spool event -> what systemctl status shows after "idle, live transcription".
STATUS_ROWS = [
    pytest.param(
        {"available": False, "problem": "Read-only file system: /s/.owner.lock"},
        "idle, live transcription; spool unavailable: Read-only file system: /s/.owner.lock",
        id="unavailable",
    ),
    pytest.param(
        {"waiting": 2, "notice": "database was damaged: set aside as spool.sqlite3.corrupt-x"},
        "idle, live transcription, 2 recordings waiting; "
        "spool database was damaged: set aside as spool.sqlite3.corrupt-x",
        id="rebuilt",
    ),
    pytest.param({"waiting": 0, "notice": None}, "idle, live transcription", id="sound"),
]


@pytest.mark.parametrize(("spool_event", "line"), STATUS_ROWS)
def test_status_line_says_what_is_wrong_with_the_spool(spool_event, line):
    tracker = StatusTracker()
    tracker.update(StateChanged(state="idle", mode="live"))
    assert tracker.update(SpoolStatus(**spool_event)) is (line != "idle, live transcription")
    assert tracker.line() == line


def test_status_page_spool_part(tmp_path):
    populated(tmp_path)
    corrupt_database(tmp_path / "spool")
    spool = Spool(SpoolParams(tmp_path / "spool", min_free_bytes=0))
    section = spool_section(spool)
    assert section["available"] is True and section["waiting"] == 1
    assert section["notice"].startswith("database was damaged: set aside as spool.sqlite3.corrupt-")
    spool.store.close()  # a spool whose database stops answering is shown unavailable
    broken = spool_section(spool)
    assert broken["available"] is False and "cannot read the spool" in broken["problem"]
    assert spool_unavailable("x") == {
        "available": False,
        "problem": "x",
        "waiting": None,
        "recordings": [],
    }
