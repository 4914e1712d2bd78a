"""Where each thing is published: one base topic per device, fixed names below it."""

from __future__ import annotations

import dataclasses

#: Retained state topics below the base, in the order they are republished.
STATE_NAMES = (
    "state",
    "mode",
    "session",
    "connection",
    "spool",
    "level",
    "volume",
    "mute",
    "error",
    "version",
)
#: Event topics below ``<base>/event/`` (not retained).
EVENT_NAMES = ("turn", "partial", "agent_user", "agent_reply", "account", "recording")


@dataclasses.dataclass(frozen=True)
class Message:
    """One MQTT message to publish (``payload`` empty and retained: clear the topic)."""

    topic: str
    payload: str
    retain: bool = False
    qos: int = 1


@dataclasses.dataclass(frozen=True)
class Topics:
    """The device's topics below ``base`` (``appliance/<device id>`` unless configured)."""

    base: str

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    def state(self, name: str) -> str:
        """A retained state topic (one of :data:`STATE_NAMES`)."""
        if name not in STATE_NAMES:
            raise ValueError(f"unknown state topic {name!r}")
        return f"{self.base}/{name}"

    def event(self, name: str) -> str:
        """An event topic (one of :data:`EVENT_NAMES`)."""
        if name not in EVENT_NAMES:
            raise ValueError(f"unknown event topic {name!r}")
        return f"{self.base}/event/{name}"

    @property
    def commands(self) -> str:
        """The subscription for commands: ``<base>/cmd/<name>``."""
        return f"{self.base}/cmd/+"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    @property
    def command_result(self) -> str:
        """Where each command is acknowledged or refused (not under ``cmd/+``)."""
        return f"{self.base}/result"

    def command_name(self, topic: str) -> str | None:
        """The command a topic names, or None when it is not one of this device's."""
        prefix = f"{self.base}/cmd/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix) :]
        return name if name and "/" not in name else None


def valid_topic_prefix(value: str) -> bool:
    """A base or discovery prefix: non-empty, no wildcards, no empty levels at the ends."""
    return bool(value) and not any(c in value for c in "+#\0") and value.strip("/") == value
