"""Events in, MQTT messages out, without a broker."""

from __future__ import annotations

import json

from appliance import events as ev
from appliance.mqtt.mapper import EventMapper, MapperLimits
from appliance.mqtt.topics import Topics

T = Topics("appliance/d")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def published(event: ev.Event, seq: int = 1) -> ev.Published[ev.Event]:
    return ev.Published(event, 1700000000.0, seq)


def test_state_is_retained_and_sent_only_when_it_changes() -> None:
    m = EventMapper(T, "0.1.0")
    first = m.map(published(ev.StateChanged(state="listening", mode="live")))
    again = m.map(published(ev.StateChanged(state="listening", mode="live")))
    assert [(x.topic, x.retain) for x in first] == [
        ("appliance/d/state", True), ("appliance/d/mode", True), ("appliance/d/connection", True),
    ]  # fmt: skip
    assert json.loads(first[0].payload) == {"state": "listening", "mode": "live", "detail": ""}
    assert first[2].payload == "online" and again == []


def test_uploader_states_do_not_change_the_button_mode() -> None:
    m = EventMapper(T, "0.1.0")
    out = m.map(published(ev.StateChanged(state="offline", mode="upload")))
    assert {x.topic: x.payload for x in out}["appliance/d/connection"] == "offline"
    assert "appliance/d/mode" not in {x.topic for x in out}


def test_retained_lists_every_state_for_a_reconnect_version_first_in_order() -> None:
    m = EventMapper(T, "0.1.0")
    m.map(published(ev.SpoolStatus(waiting=3, bytes=10)))
    m.map(published(ev.StateChanged(state="idle", mode="record")))
    topics = [x.topic.rsplit("/", 1)[1] for x in m.retained()]
    assert topics == ["state", "mode", "spool", "version"]
    assert json.loads(m.retained()[2].payload)["waiting"] == 3
    assert all(x.retain for x in m.retained())


def test_volume_and_mute_are_retained_states_home_assistant_can_show() -> None:
    m = EventMapper(T, "0.1.0")
    volume = m.map(published(ev.VolumeChanged(percent=40, gain=0.16, source="page")))
    mute = m.map(published(ev.MuteChanged(muted=True, source="switch")))
    assert [(x.topic, x.payload, x.retain) for x in volume + mute] == [
        ("appliance/d/volume", "40", True), ("appliance/d/mute", "on", True),
    ]  # fmt: skip
    unmuted = m.map(published(ev.MuteChanged(muted=False, source="page", muted_seconds=3.0)))
    assert [x.payload for x in unmuted] == ["off"]
    assert {"volume", "mute"} <= {x.topic.rsplit("/", 1)[1] for x in m.retained()}


def test_a_final_turn_is_an_event_with_its_seq_and_without_words() -> None:
    m = EventMapper(T, "0.1.0")
    turn = ev.TurnFinal(session_id="s", turn_order=2, text="hi", words=({"text": "hi"},))
    (msg,) = m.map(published(turn, seq=41))
    body = json.loads(msg.payload)
    assert msg.topic == "appliance/d/event/turn" and not msg.retain
    assert body["seq"] == 41 and body["text"] == "hi" and body["turn_order"] == 2
    assert "words" not in body and body["v"] == ev.SCHEMA_VERSION


def test_partials_are_off_by_default_and_rate_limited_when_on() -> None:
    partial = ev.TurnPartial(session_id="s", turn_order=0, text="h")
    assert EventMapper(T, "v").map(published(partial)) == []
    clock = Clock()
    m = EventMapper(T, "v", MapperLimits(partials=True, partial_interval_seconds=1.0), clock)
    assert len(m.map(published(partial))) == 1
    clock.now += 0.5
    assert m.map(published(partial)) == []
    clock.now += 0.6
    assert len(m.map(published(partial))) == 1


def test_the_level_is_rate_limited() -> None:
    clock = Clock()
    m = EventMapper(T, "v", MapperLimits(level_interval_seconds=10), clock)
    assert [x.payload for x in m.map(published(ev.MicLevel(dbfs=-40.04)))] == ["-40.0"]
    clock.now += 9
    assert m.map(published(ev.MicLevel(dbfs=-20.0))) == []
    clock.now += 1
    assert [x.payload for x in m.map(published(ev.MicLevel(dbfs=-20.0)))] == ["-20.0"]


def test_a_session_end_publishes_its_account_and_a_recording_its_transcript() -> None:
    m = EventMapper(T, "v")
    ended = ev.SessionPhase(phase="ended", mode="live", session_id="s", account={"lost": 0})
    out = {x.topic: json.loads(x.payload) for x in m.map(published(ended))}
    assert out["appliance/d/session"] == {"phase": "ended", "mode": "live", "session_id": "s"}
    assert out["appliance/d/event/account"]["account"] == {"lost": 0}
    done = ev.RecordingTranscript(recording_id="r1", transcript_id="t1", origin="record", text="x")
    (msg,) = m.map(published(done))
    body = json.loads(msg.payload)
    assert msg.topic == "appliance/d/event/recording"
    assert (body["recording_id"], body["transcript_id"], body["text"]) == ("r1", "t1", "x")


def test_agent_turns_finals_only_unless_partials() -> None:
    m = EventMapper(T, "v")
    assert m.map(published(ev.AgentUser(text="wha", final=False))) == []
    (user,) = m.map(published(ev.AgentUser(text="what time", final=True)))
    (reply,) = m.map(published(ev.AgentReply(text="noon", reply_id="r", interrupted=True)))
    assert user.topic.endswith("/agent_user") and json.loads(user.payload)["final"] is True
    assert json.loads(reply.payload)["interrupted"] is True
