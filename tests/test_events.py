"""The event feed: typed kinds that match their documented schema, fanned out without blocking."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import typing
from pathlib import Path

import pytest

from appliance import events as ev
from appliance.events import (
    SCHEMA,
    SCHEMA_VERSION,
    ErrorReported,
    Event,
    EventBus,
    MicLevel,
    SessionPhase,
    StateChanged,
    TurnFinal,
)
from appliance.modes import MODE_LABELS, MODES

DOC = Path(__file__).resolve().parents[1] / ev.SCHEMA_DOC


def documented() -> dict[str, dict[str, str]]:
    """Each kind on the doc page with its fields and their type cells, in page order."""
    kinds: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in DOC.read_text().splitlines():
        heading = re.fullmatch(r"### `([a-z_.]+)`", line)
        if heading:
            current = kinds.setdefault(heading.group(1), {})
            continue
        row = re.fullmatch(r"\| `([a-z_]+)` \| (.+?) \| .+ \|", line)
        if row and current is not None:
            current[row.group(1)] = row.group(2)
    return kinds


def choices(cls: type[Event], name: str) -> tuple[object, ...]:
    hint = typing.get_type_hints(cls)[name]
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()


def test_the_doc_page_lists_every_kind_and_field_the_code_has() -> None:
    assert f"Schema version: **{SCHEMA_VERSION}**" in DOC.read_text()
    page = documented()
    assert list(page) == [cls.kind for cls in SCHEMA]
    for cls in SCHEMA:
        assert list(page[cls.kind]) == [f.name for f in dataclasses.fields(cls)], cls.kind


def test_the_doc_page_lists_every_allowed_value_and_no_other() -> None:
    page = documented()
    for cls in SCHEMA:
        for field in dataclasses.fields(cls):
            allowed = choices(cls, field.name)
            if allowed:
                listed = tuple(re.findall(r"`([a-z_]+)`", page[cls.kind][field.name]))
                assert listed == allowed, f"{cls.kind}.{field.name}"


def test_the_agents_session_phases_are_in_the_schema() -> None:
    assert set(choices(SessionPhase, "phase")) == {
        "started",
        "ended",
        "resumed",
        "new_conversation",
    }


def test_a_kind_the_schema_does_not_list_is_refused() -> None:
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Unlisted(Event):
        kind: typing.ClassVar[str] = "unlisted"

    with pytest.raises(TypeError, match="not in the event schema"):
        EventBus().publish(Unlisted())


def test_a_value_the_schema_does_not_list_is_refused() -> None:
    with pytest.raises(ValueError, match=r"session\.phase"):
        SessionPhase(phase="paused", mode="agent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"state\.mode"):
        StateChanged(state="idle", mode="kitchen")  # type: ignore[arg-type]


def test_json_form_names_kind_and_version() -> None:
    event = TurnFinal(session_id="s1", turn_order=3, text="Three.", words=({"text": "Three."},))
    form = event.to_dict()
    assert form == {
        "kind": "turn.final",
        "v": SCHEMA_VERSION,
        "session_id": "s1",
        "turn_order": 3,
        "text": "Three.",
        "words": ({"text": "Three."},),
        "speaker": None,
        "late": False,
        "offset_ms": None,
    }
    assert json.loads(json.dumps(form))["words"] == [{"text": "Three."}]


def test_every_mode_has_one_label_and_is_a_session_and_state_mode() -> None:
    assert set(MODE_LABELS) == set(MODES)
    assert choices(SessionPhase, "mode") == MODES
    assert set(MODES) <= set(choices(StateChanged, "mode"))
    assert ev.idle("record").detail == MODE_LABELS["record"]


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe((TurnFinal,))
    bus.publish(StateChanged(state="idle", mode="live"))
    bus.publish(TurnFinal(session_id="s", turn_order=0, text="one"))
    assert [(await a.get()).kind, (await a.get()).kind] == ["state", "turn.final"]
    only = await b.get()
    assert isinstance(only.event, TurnFinal) and only.event.text == "one"
    assert only.seq == 2


async def test_latest_is_the_newest_event_of_its_kind() -> None:
    bus = EventBus()
    assert bus.latest(StateChanged) is None
    bus.publish(StateChanged(state="idle", mode="live"))
    bus.publish(ErrorReported(message="x", where="live"))
    bus.publish(StateChanged(state="listening", mode="live"))
    latest = bus.latest(StateChanged)
    assert latest is not None and latest.event.state == "listening"


async def test_publish_from_another_thread_wakes_the_subscriber() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    threading.Thread(target=bus.publish, args=(MicLevel(dbfs=-20.0),)).start()
    published = await asyncio.wait_for(sub.get(), 5)
    assert published.event == MicLevel(dbfs=-20.0)


async def test_slow_subscriber_loses_oldest_and_counts_them() -> None:
    bus = EventBus(queue_length=4)
    sub = bus.subscribe()
    for i in range(10):
        bus.publish(MicLevel(dbfs=-float(i)))
    assert sub.dropped == 6
    assert [(await sub.get()).event for _ in range(4)] == [
        MicLevel(dbfs=-float(i)) for i in (6, 7, 8, 9)
    ]


def test_a_removed_callback_is_not_called_again() -> None:
    bus = EventBus()
    seen: list[str] = []

    def callback(published: ev.Published[Event]) -> None:
        seen.append(published.kind)

    bus.add_callback(callback)
    bus.publish(MicLevel(dbfs=-1.0))
    bus.remove_callback(callback)
    bus.publish(MicLevel(dbfs=-2.0))
    assert seen == ["level"]


def test_a_callback_given_kinds_gets_only_those() -> None:
    bus = EventBus()
    seen: list[str] = []
    bus.add_callback(lambda published: seen.append(published.kind), (StateChanged,))
    bus.publish(MicLevel(dbfs=-1.0))
    bus.publish(StateChanged(state="idle", mode="live"))
    assert seen == ["state"]


async def test_wants_a_kind_while_a_subscriber_or_callback_takes_it() -> None:
    bus = EventBus()
    bus.add_callback(lambda published: None, (StateChanged,))
    assert not bus.wants(MicLevel)
    sub = bus.subscribe((MicLevel,))
    assert bus.wants(MicLevel)
    sub.close()
    assert not bus.wants(MicLevel)
    everything = bus.subscribe()
    assert bus.wants(MicLevel)
    everything.close()
    assert not bus.wants(MicLevel)


async def test_listener_watchers_hear_every_change_until_unwatched() -> None:
    bus = EventBus()
    changes: list[bool] = []
    unwatch = bus.watch_listeners(lambda: changes.append(bus.wants(MicLevel)))
    sub = bus.subscribe()
    sub.close()
    sub.close()  # a second close changes nothing
    unwatch()
    bus.subscribe()
    assert changes == [True, False]
