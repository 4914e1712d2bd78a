"""``appliance spool ...`` and ``appliance transcribe`` through the real command line."""

from __future__ import annotations

import json

import pytest

from appliance import dtmf
from appliance.cli import main
from appliance.spool import Spool, SpoolParams
from appliance.spool import store as st

from .helpers import RATE, record_digits


@pytest.fixture
def config_file(tmp_path, emulator, monkeypatch):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", emulator.api_key)
    path = tmp_path / "config.yaml"
    path.write_text(
        f"spool:\n  directory: {tmp_path / 'spool'}\n  min_free_bytes: 0\n"
        f"endpoints:\n  base_url: {emulator.http_url}\n"
        "upload:\n  poll_seconds: 0.1\n"
    )
    return path


def owner_spool(tmp_path) -> Spool:
    return Spool(SpoolParams(tmp_path / "spool", min_free_bytes=0))


def test_list_shows_state_size_age_attempts(tmp_path, config_file, capsys):
    spool = owner_spool(tmp_path)
    rid = record_digits(spool, "1 2")
    spool.store.transition(rid, st.READY, st.FAILED, attempts=3, last_error="gave up: 503")
    assert main(["spool", "list", "-c", str(config_file)]) == 0
    out = capsys.readouterr().out
    header, line = out.splitlines()[:2]
    assert header.split() == ["ID", "ORIGIN", "STATE", "SIZE", "LENGTH", "AGE", "TRIES", "NOTE"]
    assert line.split()[:3] == [rid, "record", "failed"] and "gave up: 503" in line
    assert line.split()[7] == "3"


def test_retry_refuses_ids_that_are_not_ours(tmp_path, config_file, capsys):
    owner_spool(tmp_path)
    assert main(["spool", "retry", "../../etc/passwd", "-c", str(config_file)]) == 2
    assert "not a session or recording id" in capsys.readouterr().err


def test_retry_and_purge(tmp_path, config_file, capsys):
    spool = owner_spool(tmp_path)
    a = record_digits(spool, "1")
    b = record_digits(spool, "2")
    spool.store.transition(a, st.READY, st.FAILED, last_error="x")
    spool.store.transition(b, st.READY, st.COMPLETED, completed_at=1.0)
    assert main(["spool", "retry", a, "-c", str(config_file)]) == 0
    assert spool.get(a).state == st.READY
    assert main(["spool", "retry", a, "-c", str(config_file)]) == 1  # not failed any more
    assert main(["spool", "purge", "--completed", "-c", str(config_file)]) == 0
    assert spool.segments(b) == [] and spool.segments(a)
    assert "1 completed" in capsys.readouterr().out


def test_transcribe_prints_text_and_json(tmp_path, config_file, capsys):
    wav = tmp_path / "clip.wav"
    dtmf.write_wav(wav, dtmf.generate("4 2", RATE), RATE)
    assert main(["transcribe", str(wav), "-c", str(config_file)]) == 0
    assert capsys.readouterr().out.strip() == "Four two."
    assert main(["transcribe", str(wav), "--json", "-c", str(config_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == "completed" and data["text"] == "Four two."
