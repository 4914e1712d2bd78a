"""The daemon over a damaged spool: it starts in every mode, says what is wrong on the
status page and in STATUS=, and a corrupt database costs neither a session nor a recording.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest

from appliance.demo import words_to_digits
from appliance.events import ErrorReported, EventBus, TurnFinal
from appliance.spool import Spool, SpoolParams
from appliance.spool.repair import quarantined
from tests.events import collect
from tests.spool.helpers import corrupt_database, read_only, record_digits
from tests.test_daemon import daemon_config, mic_file, press_speak_press, start


def spool_dir(tmp_path):
    return tmp_path / "state" / "spool"


def spool_with_a_recording(tmp_path) -> str:
    spool = Spool(SpoolParams(spool_dir(tmp_path), min_free_bytes=0))
    rid = record_digits(spool, "8 3")
    spool.close()
    return rid


@contextlib.contextmanager
def damaged(tmp_path, damage: str):
    spool_with_a_recording(tmp_path)
    if damage == "corrupt database":
        corrupt_database(spool_dir(tmp_path))
        yield
    else:
        with read_only(spool_dir(tmp_path)):
            yield


# damage -> what the status page's spool part, STATUS= and the error list say.
DAMAGE = {
    "corrupt database": (True, "spool database was damaged: set aside as spool.sqlite3.corrupt-"),
    "read-only directory": (False, "spool unavailable: Read-only file system"),
}


@pytest.mark.parametrize("mode", ["live", "agent", "record"])
@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_daemon_starts_on_a_damaged_spool_and_says_so(tmp_path, emulator, damage, mode):
    if damage == "read-only directory" and __import__("os").geteuid() != 0:
        pytest.skip("mode 0500 does not stop the spool's lock file from opening")
    available, said = DAMAGE[damage]
    config = daemon_config(tmp_path, emulator, mode, mic_file(tmp_path, "1"))
    config.spool.min_free_bytes = 0
    events = EventBus()
    errors = collect(events, ErrorReported)
    with damaged(tmp_path, damage):
        app, runner = await start(config, events)
        daemon = app.daemon
        await asyncio.sleep(0.2)
        section = daemon.status_snapshot()["spool"]
        assert section["available"] is available
        shown = section.get("notice") or section.get("problem") or ""
        assert said.split(": ", 1)[1] in shown
        assert said in app.notifier.last_status
        assert any(said in e.message for e in errors)
        if mode == "record" and not available:
            earcons: list[str] = []
            daemon.play_earcon = earcons.append
            daemon.press("short")
            await asyncio.sleep(0.3)
            await asyncio.wait_for(daemon.wait_idle(), 5)
            assert "error" in earcons
            assert any(e.message.startswith("cannot record: spool unavailable") for e in errors)
        app.stop()
        assert await asyncio.wait_for(runner, 20) == 0


async def test_corrupt_spool_database_live_session_and_old_recording_both_transcribed(
    tmp_path, emulator
):
    """The done-when of the spool part: a daemon whose spool database is corrupt starts
    in live mode, transcribes a session, reports the quarantine, and the recording that
    was waiting in the spool is rebuilt and transcribed too."""
    old = spool_with_a_recording(tmp_path)
    damaged_bytes = corrupt_database(spool_dir(tmp_path))
    config = daemon_config(tmp_path, emulator, "live", mic_file(tmp_path, "4 7 1"))
    config.spool.min_free_bytes = 0
    events = EventBus()
    finals = collect(events, TurnFinal)
    errors = collect(events, ErrorReported)
    app, runner = await start(config, events)
    daemon = app.daemon
    await press_speak_press(daemon)

    assert "".join(words_to_digits(e.text) for e in finals) == "471"
    (account,) = daemon.accounts
    assert account.balanced
    (kept,) = quarantined(spool_dir(tmp_path) / "spool.sqlite3")
    assert kept.read_bytes() == damaged_bytes
    assert any(kept.name in e.message for e in errors)
    assert kept.name in daemon.status_snapshot()["spool"]["notice"]
    assert kept.name in app.notifier.last_status
    spool = daemon.components.spool
    deadline = time.monotonic() + 30
    while (row := spool.get(old)).state != "completed":
        assert time.monotonic() < deadline, (row.state, row.last_error)
        await asyncio.sleep(0.1)
    app.stop()
    assert await asyncio.wait_for(runner, 20) == 0
    text = json.loads(spool.artifact_path(old, "json").read_text())["text"]
    assert words_to_digits(text) == "83"
