"""Typed events in, MQTT messages out: pure, so every payload is tested without a broker.

State is retained and only sent when it changed (a broker keeps the latest
for anyone who subscribes later, and it is republished on each reconnect);
events are not retained and carry the feed's ``seq``, so a reader can drop
the duplicates QoS 1 allows. Turns leave out their words (a dashboard wants
the text; the words multiply the bytes by ten). The microphone level and
partial turns are rate-limited here, whoever publishes them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable

from appliance import events as ev
from appliance.modes import MODES
from appliance.mqtt.topics import STATE_NAMES, Message, Topics

#: States that mean the cloud session is connected.
_ONLINE_STATES = frozenset({"listening", "agent_speaking", "recording"})


@dataclasses.dataclass(frozen=True)
class MapperLimits:
    """How often the chatty kinds may be published, and whether partials are at all."""

    partials: bool = False
    partial_interval_seconds: float = 1.0
    level_interval_seconds: float = 10.0
    qos: int = 1


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class EventMapper:
    """Turns each published event into the messages it means; remembers retained state."""

    def __init__(
        self,
        topics: Topics,
        version: str,
        limits: MapperLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topics = topics
        self.limits = limits or MapperLimits()
        self._clock = clock
        self._retained: dict[str, str] = {topics.state("version"): version}
        self._last_level = -float("inf")
        self._last_partial: dict[str, float] = {}

    def retained(self) -> list[Message]:
        """Every retained state message as it stands (republished after each reconnect)."""
        order = {self.topics.state(name): i for i, name in enumerate(STATE_NAMES)}
        return [
            Message(topic, payload, retain=True, qos=self.limits.qos)
            for topic, payload in sorted(self._retained.items(), key=lambda kv: order[kv[0]])
        ]

    def map(self, published: ev.Published[ev.Event]) -> list[Message]:
        """The messages ``published`` means (none for kinds MQTT does not carry)."""
        event = published.event
        out: list[Message] = []
        if isinstance(event, ev.StateChanged):
            self._state(out, "state", {"state": event.state, "mode": event.mode,
                                       "detail": event.detail})  # fmt: skip
            if event.mode in MODES:
                self._state(out, "mode", event.mode)
            connection = _connection(event)
            if connection is not None:
                self._state(out, "connection", connection)
        elif isinstance(event, ev.SessionPhase):
            self._state(out, "session", {"phase": event.phase, "mode": event.mode,
                                         "session_id": event.session_id})  # fmt: skip
            if event.phase == "ended":
                self._last_partial.clear()  # a turn left unfinished is not waited for
                self._event(out, published, "account", {
                    "mode": event.mode, "session_id": event.session_id,
                    "account": dict(event.account) if event.account is not None else None,
                })  # fmt: skip
        elif isinstance(event, ev.TurnFinal):
            self._last_partial.pop(event.session_id, None)
            self._event(out, published, "turn", {
                "session_id": event.session_id, "turn_order": event.turn_order,
                "text": event.text, "speaker": event.speaker, "late": event.late,
                "offset_ms": event.offset_ms,
            })  # fmt: skip
        elif isinstance(event, ev.TurnPartial):
            if self._partial_due(event.session_id):
                self._event(out, published, "partial", {
                    "session_id": event.session_id, "turn_order": event.turn_order,
                    "text": event.text, "speaker": event.speaker,
                })  # fmt: skip
        elif isinstance(event, ev.AgentUser):
            if event.final or self._partial_due("agent"):
                self._event(out, published, "agent_user", {"text": event.text,
                                                           "final": event.final})  # fmt: skip
            if event.final:
                self._last_partial.pop("agent", None)
        elif isinstance(event, ev.AgentReply):
            self._event(out, published, "agent_reply", {
                "text": event.text, "reply_id": event.reply_id, "interrupted": event.interrupted,
            })  # fmt: skip
        elif isinstance(event, ev.RecordingTranscript):
            self._event(out, published, "recording", {
                "recording_id": event.recording_id, "transcript_id": event.transcript_id,
                "origin": event.origin, "text": event.text, "session_id": event.session_id,
            })  # fmt: skip
        elif isinstance(event, ev.SpoolStatus):
            self._state(out, "spool", {
                "available": event.available, "waiting": event.waiting, "bytes": event.bytes,
                "full": event.full, "problem": event.problem, "states": dict(event.states),
            })  # fmt: skip
        elif isinstance(event, ev.ErrorReported):
            self._state(out, "error", {"message": event.message, "where": event.where,
                                       "time": round(published.time, 3)})  # fmt: skip
        elif isinstance(event, ev.VolumeChanged):
            self._state(out, "volume", str(event.percent))
        elif isinstance(event, ev.MuteChanged):
            self._state(out, "mute", "on" if event.muted else "off")
        elif isinstance(event, ev.MicLevel):
            now = self._clock()
            if now - self._last_level >= self.limits.level_interval_seconds:
                self._last_level = now
                self._state(out, "level", f"{event.dbfs:.1f}")
        return out

    # -- helpers -----------------------------------------------------------

    def _state(self, out: list[Message], name: str, value: object) -> None:
        topic = self.topics.state(name)
        payload = value if isinstance(value, str) else _json(value)
        if self._retained.get(topic) != payload:
            self._retained[topic] = payload
            out.append(Message(topic, payload, retain=True, qos=self.limits.qos))

    def _event(
        self,
        out: list[Message],
        published: ev.Published[ev.Event],
        name: str,
        fields: dict[str, object],
    ) -> None:
        body = {"v": ev.SCHEMA_VERSION, "seq": published.seq, "time": round(published.time, 3)}
        out.append(Message(self.topics.event(name), _json({**body, **fields}),
                           qos=self.limits.qos))  # fmt: skip

    def _partial_due(self, key: str) -> bool:
        if not self.limits.partials:
            return False
        now = self._clock()
        if now - self._last_partial.get(key, -float("inf")) < self.limits.partial_interval_seconds:
            return False
        self._last_partial[key] = now
        return True


def _connection(event: ev.StateChanged) -> str | None:
    """``online``/``offline`` as far as this state tells (None: it says nothing about it)."""
    if event.state == "offline":
        return "offline"
    if event.state in _ONLINE_STATES or (event.mode == "upload" and event.state == "idle"):
        return "online"
    return None
