"""Home Assistant MQTT discovery: one device entry and its entities, as retained config.

Each entity is one retained message on
``<prefix>/<component>/<device id>/<object id>/config`` (the per-component
form every Home Assistant release with MQTT discovery reads). Each payload
has what HA's documentation requires of its platform (``state_topic`` for
sensors and binary sensors, ``command_topic`` for buttons, ``command_topic``
and ``options`` for a select), a ``unique_id`` and the shared ``device``
(``identifiers``), so all of them land under one device. An empty retained
payload on the same topics removes them.
"""

from __future__ import annotations

import json
from typing import Any

from appliance.modes import MODES
from appliance.mqtt.topics import Message, Topics

#: In the state directory: the discovery topics last published (to remove them when disabled).
DISCOVERY_MARKER = "mqtt-discovery.json"
#: Shown in HA's device page and its discovery log.
ORIGIN_NAME = "appliance"
MANUFACTURER = "appliance"
MODEL = "Raspberry Pi voice appliance"


def _entities(topics: Topics) -> list[tuple[str, str, dict[str, Any]]]:
    """(component, object id, platform fields) for every entity."""
    state, spool = topics.state("state"), topics.state("spool")
    turn, error = topics.event("turn"), topics.state("error")
    return [
        ("sensor", "state", {
            "name": "State", "state_topic": state, "value_template": "{{ value_json.state }}",
            "json_attributes_topic": state, "icon": "mdi:microphone-message",
        }),
        ("select", "mode", {
            "name": "Mode", "state_topic": topics.state("mode"),
            "command_topic": topics.command("mode"), "options": list(MODES),
            "icon": "mdi:format-list-bulleted",
        }),
        ("button", "start", {
            "name": "Start", "command_topic": topics.command("start"), "icon": "mdi:play",
        }),
        ("button", "stop", {
            "name": "Stop", "command_topic": topics.command("stop"), "icon": "mdi:stop",
        }),
        ("button", "interrupt", {
            "name": "Interrupt agent", "command_topic": topics.command("interrupt"),
            "icon": "mdi:hand-back-left",
        }),
        ("button", "retry_spool", {
            "name": "Retry uploads", "command_topic": topics.command("retry"),
            "entity_category": "config", "icon": "mdi:cloud-upload",
        }),
        ("sensor", "backlog", {
            "name": "Recordings waiting", "state_topic": spool,
            "value_template": "{{ value_json.waiting }}", "json_attributes_topic": spool,
            "unit_of_measurement": "recordings", "state_class": "measurement",
            "icon": "mdi:tray-full",
        }),
        ("sensor", "last_transcript", {
            "name": "Last transcript", "state_topic": turn,
            # A sensor's state holds at most 255 characters; the attributes hold it all.
            "value_template": "{{ value_json.text[:255] }}", "json_attributes_topic": turn,
            "icon": "mdi:text-box-outline",
        }),
        ("binary_sensor", "connectivity", {
            "name": "Cloud connection", "state_topic": topics.state("connection"),
            "payload_on": "online", "payload_off": "offline", "device_class": "connectivity",
        }),
        ("number", "volume", {
            # Home Assistant sends the number as text ("50" or "50.0"); commands.parse takes both.
            "name": "Volume", "state_topic": topics.state("volume"),
            "command_topic": topics.command("volume"), "min": 0, "max": 100, "step": 1,
            "unit_of_measurement": "%", "mode": "slider", "icon": "mdi:volume-high",
        }),
        ("switch", "mute", {
            "name": "Mute", "state_topic": topics.state("mute"),
            "command_topic": topics.command("mute"), "payload_on": "on", "payload_off": "off",
            "state_on": "on", "state_off": "off", "icon": "mdi:microphone-off",
        }),
        ("sensor", "level", {
            "name": "Microphone level", "state_topic": topics.state("level"),
            "unit_of_measurement": "dBFS", "state_class": "measurement",
            "entity_category": "diagnostic", "icon": "mdi:microphone",
        }),
        ("sensor", "last_error", {
            "name": "Last error", "state_topic": error,
            "value_template": "{{ value_json.message[:255] }}", "json_attributes_topic": error,
            "entity_category": "diagnostic", "icon": "mdi:alert-circle-outline",
        }),
    ]  # fmt: skip


def config_topic(prefix: str, component: str, device_id: str, object_id: str) -> str:
    return f"{prefix}/{component}/{device_id}/{object_id}/config"


def discovery_messages(
    prefix: str, device_id: str, topics: Topics, version: str, name: str | None = None
) -> list[Message]:
    """The retained config message of every entity, all under one device."""
    device = {
        "identifiers": [f"appliance_{device_id}"],
        "name": name or f"Appliance {device_id}",
        "manufacturer": MANUFACTURER,
        "model": MODEL,
        "sw_version": version,
    }
    out = []
    for component, object_id, fields in _entities(topics):
        payload = {
            **fields,
            "unique_id": f"appliance_{device_id}_{object_id}",
            # Home Assistant 2025.10 replaced object_id with this (object_id ends in 2026.4).
            "default_entity_id": f"{component}.appliance_{device_id}_{object_id}",
            "availability_topic": topics.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "qos": 1,
            "device": device,
            "origin": {"name": ORIGIN_NAME, "sw_version": version},
        }
        topic = config_topic(prefix, component, device_id, object_id)
        out.append(Message(topic, json.dumps(payload, separators=(",", ":")), retain=True))
    return out


def discovery_topics(prefix: str, device_id: str, topics: Topics) -> list[str]:
    return [config_topic(prefix, c, device_id, o) for c, o, _ in _entities(topics)]


def removal_messages(config_topics: list[str]) -> list[Message]:
    """Empty retained payloads: Home Assistant removes the entities, the broker the configs."""
    return [Message(topic, "", retain=True) for topic in config_topics]
