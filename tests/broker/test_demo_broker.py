"""Every mode with the key held only by the broker, and not a trace of it on the device.

``appliance demo --broker`` runs the real daemon per mode (live, record, agent)
against a local broker in front of the emulator: tokens for live and agent,
the pre-recorded proxy for the recording.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from appliance import demo
from appliance.emulator import DEMO_API_KEY


def device_side_files(work: Path) -> list[Path]:
    """Everything the device wrote or was given (the broker's own folder excluded)."""
    return [p for p in work.rglob("*") if p.is_file() and "broker" not in p.relative_to(work).parts]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", ["live", "record", "agent"])
async def test_a_session_in_each_mode_goes_device_broker_emulator_without_the_key(
    tmp_path: Path,
    mode: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    if mode == "agent":
        # Press well before the question, so the greeting has sounded (half duplex silences
        # what the microphone hears meanwhile) whatever the broker's extra hop costs.
        monkeypatch.setattr(demo, "PRESS_BEFORE_SPEECH", 1.5)
    code = await demo._demo("27", [mode], None, broker=True, work_dir=tmp_path)
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"summary: {mode} ok" in out
    files = device_side_files(tmp_path)
    assert any(p.name == "device-1.credential" for p in files)
    assert any(f"state-{mode}" in p.parts for p in (f.relative_to(tmp_path) for f in files))
    for path in files:
        assert DEMO_API_KEY.encode() not in path.read_bytes(), path
    audit = [r.getMessage() for r in caplog.records if r.name == "appliance.broker.audit"]
    assert audit and all('"device": "device-1"' in line for line in audit)
    if mode == "record":
        assert any('"path": "/v2/upload"' in line for line in audit)
    else:
        assert any('"result": "ok"' in line for line in audit)
    device_log = "\n".join(r.getMessage() for r in caplog.records)
    assert DEMO_API_KEY not in device_log and DEMO_API_KEY not in out
    assert os.environ.get("ASSEMBLYAI_API_KEY") in (None, "")
