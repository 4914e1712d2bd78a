"""The status view's snapshot pieces: from the bus's newest events, and from a real spool."""

from __future__ import annotations

import numpy as np

from appliance.events import EventBus, MicLevel, SessionPhase, StateChanged
from appliance.spool.spool import Spool, SpoolParams
from appliance.web.snapshot import from_events, spool_section


def test_state_session_and_level_come_from_the_newest_events():
    bus = EventBus()
    assert from_events(bus) == {}
    bus.publish(SessionPhase(phase="started", mode="live", session_id="abc"))
    bus.publish(StateChanged(state="listening", mode="live"))
    bus.publish(MicLevel(dbfs=-31.5))
    assert from_events(bus) == {
        "state": "listening",
        "mode": "live",
        "session": {"id": "abc", "mode": "live"},
        "level_dbfs": -31.5,
    }
    bus.publish(SessionPhase(phase="ended", mode="live", session_id="abc", account={}))
    bus.publish(StateChanged(state="idle", mode="upload"))  # not a button mode
    snapshot = from_events(bus)
    assert snapshot["session"] is None and snapshot["state"] == "idle"
    assert "mode" not in snapshot  # "upload" is not what a button press starts


def test_spool_section_lists_waiting_recordings_newest_first(tmp_path):
    spool = Spool(SpoolParams(directory=tmp_path / "spool"))
    try:
        ids = []
        for _ in range(2):
            writer = spool.open_recording("record", 16_000)
            writer.write(np.zeros(16_000, dtype=np.int16))
            ids.append(writer.close())
        section = spool_section(spool)
    finally:
        spool.close()
    assert section["waiting"] == 2
    assert section["full"] is False
    assert [r["id"] for r in section["recordings"]] == ids[::-1]
    assert all(r["state"] == "ready" and r["bytes"] == 32_000 for r in section["recordings"])
    assert section["recordings"][0]["seconds"] == 1.0
