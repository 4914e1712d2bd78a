"""Commands checked and Home Assistant's config payloads, without a broker."""

from __future__ import annotations

import json

import pytest

from appliance.mqtt import commands
from appliance.mqtt.discovery import discovery_messages, removal_messages
from appliance.mqtt.identity import DEVICE_ID_FILE, device_id
from appliance.mqtt.topics import Topics

T = Topics("appliance/d")

#: What Home Assistant's MQTT platform docs mark as required, per component.
REQUIRED = {
    "sensor": {"state_topic"},
    "binary_sensor": {"state_topic"},
    "button": {"command_topic"},
    "select": {"command_topic", "options"},
    "number": {"command_topic"},
    "switch": {"command_topic"},
}


@pytest.mark.parametrize(
    ("name", "payload", "action", "args"),
    [
        ("start", b"PRESS", "start_session", {}),
        ("stop", b"", "stop_session", {}),
        ("interrupt", b"", "interrupt", {}),
        ("mode", b"agent", "set_mode", {"mode": "agent"}),
        ("mode", b'{"mode": "next"}', "switch_mode", {}),
        ("retry", b"", "retry_spool", {}),
        ("retry", b"rec-1", "retry_spool", {"id": "rec-1"}),
        ("volume", b"50", "set_volume", {"percent": "50"}),
        ("volume", b"50.0", "set_volume", {"percent": "50"}),  # Home Assistant's number
        ("mute", b"on", "mute", {}),
    ],
)
def test_valid_commands_become_the_controls_requests(name, payload, action, args) -> None:
    outcome = commands.parse(name, payload)
    assert isinstance(outcome, commands.Command)
    assert (outcome.action, outcome.args) == (action, args)


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("reboot", b"", "unknown command"),
        ("mode", b"karaoke", "mode must be one of"),
        ("mode", b"{", "not valid JSON"),
        ("mode", b'["agent"]', "mode must be one of"),
        ("mode", b'{"mode": 1}', "mode must be one of"),
        ("start", b"\xff", "not UTF-8"),
        ("start", b"x" * 2000, "larger than"),
        ("start", b'{"request_id": 5}', "request_id"),
        ("retry", b'{"id": 3}', "recording id"),
        ("volume", b"50.5", "percent from 0 to 100"),
        ("volume", b"101", "percent from 0 to 100"),
    ],
)
def test_invalid_commands_are_refused_with_a_reason(name, payload, reason) -> None:
    outcome = commands.parse(name, payload)
    assert isinstance(outcome, commands.Refused)
    assert reason in outcome.reason


def test_the_result_echoes_the_request_id_and_the_daemons_refusal() -> None:
    outcome = commands.parse("stop", b'{"request_id": "abc"}')
    result = commands.result_payload(outcome, {"ok": False, "error": "no session is running"})
    assert result == {"command": "stop", "request_id": "abc", "ok": False,
                      "reason": "no session is running"}  # fmt: skip


def test_discovery_has_what_home_assistant_requires_under_one_device() -> None:
    messages = discovery_messages("homeassistant", "d", T, "0.1.0")
    payloads = {m.topic: json.loads(m.payload) for m in messages}
    assert all(m.retain for m in messages)
    components = set()
    for topic, payload in payloads.items():
        prefix, component, node, _object, last = topic.split("/")
        assert (prefix, node, last) == ("homeassistant", "d", "config")
        components.add(component)
        assert REQUIRED[component] <= set(payload), topic
        assert payload["device"]["identifiers"] == ["appliance_d"]
        assert payload["availability_topic"] == "appliance/d/availability"
        assert payload["default_entity_id"].startswith(f"{component}.appliance_d_")
        assert "object_id" not in payload  # deprecated by HA 2025.10, gone in 2026.4
    assert len({p["unique_id"] for p in payloads.values()}) == len(payloads)
    assert components == set(REQUIRED)
    names = {p["name"] for p in payloads.values()}
    assert {"State", "Mode", "Start", "Stop", "Recordings waiting", "Last transcript",
            "Cloud connection"} <= names  # fmt: skip
    commands_used = {p["command_topic"] for p in payloads.values() if "command_topic" in p}
    assert all(commands.parse(t.rsplit("/", 1)[1], b"PRESS") for t in commands_used)


def test_removal_is_an_empty_retained_message_per_config() -> None:
    removal = removal_messages(["a/config", "b/config"])
    assert [(m.topic, m.payload, m.retain) for m in removal] == [
        ("a/config", "", True), ("b/config", "", True),
    ]  # fmt: skip


def test_the_device_id_is_made_once_and_kept(tmp_path) -> None:
    first = device_id(tmp_path)
    assert first == device_id(tmp_path) and len(first) == 12
    (tmp_path / DEVICE_ID_FILE).write_text("not valid!\n")
    assert device_id(tmp_path) != first  # a damaged id is replaced, not used in topics
