"""Feed pacing and history, without sockets or sleeps (times are plain numbers)."""

from __future__ import annotations

import json

from appliance.events import (
    SCHEMA,
    SCHEMA_VERSION,
    ErrorReported,
    Event,
    MicLevel,
    Published,
    SpoolStatus,
    StateChanged,
    TurnFinal,
    TurnPartial,
)
from appliance.web.feed import (
    FEED_KINDS,
    STATUS_DUE,
    FeedPacer,
    History,
    encode_event,
    parse_kinds,
)

_seq = iter(range(1, 10_000))


def ev(event: Event) -> Published[Event]:
    return Published(event, 0.0, next(_seq))


def level(dbfs: float) -> Published[Event]:
    return ev(MicLevel(dbfs=dbfs))


def partial(text: str, turn_order: int = 0) -> Published[Event]:
    return ev(TurnPartial(session_id="s", turn_order=turn_order, text=text))


def final(text: str, turn_order: int = 0) -> Published[Event]:
    return ev(TurnFinal(session_id="s", turn_order=turn_order, text=text))


def error(message: str) -> Published[Event]:
    return ev(ErrorReported(message=message, where="upload"))


LISTENING = StateChanged(state="listening", mode="live")


def test_level_readings_are_limited_to_one_per_interval_keeping_the_newest():
    pacer = FeedPacer(level_interval=0.2, wants_status=False)
    first, second, third = level(-40), level(-30), level(-20)
    assert pacer.on_event(first, 10.0) == [first]
    assert pacer.on_event(second, 10.05) == []
    assert pacer.on_event(third, 10.1) == []
    assert pacer.deadline() == 10.2
    assert pacer.on_timer(10.19) == []
    assert pacer.on_timer(10.2) == [third]
    assert pacer.deadline() is None


def test_fifty_level_readings_a_second_become_five():
    pacer = FeedPacer(level_interval=0.2, wants_status=False)
    sent = []
    for i in range(50):
        now = i * 0.02
        sent += pacer.on_event(level(-i), now)
        deadline = pacer.deadline()
        if deadline is not None and deadline <= now:
            sent += pacer.on_timer(now)
    assert len(sent) == 5


def test_captions_pass_straight_through():
    pacer = FeedPacer(wants_status=True)
    turns = [partial("one"), partial("one two")]
    assert [pacer.on_event(t, 1.0) for t in turns] == [[turns[0]], [turns[1]]]


def test_status_changes_trigger_at_most_one_snapshot_per_interval():
    pacer = FeedPacer(status_interval=0.5, wants_status=True)
    a, b, c = ev(LISTENING), ev(SpoolStatus(waiting=1)), error("x")
    assert pacer.on_event(a, 5.0) == [a, STATUS_DUE]
    assert pacer.on_event(b, 5.1) == [b]
    assert pacer.on_event(c, 5.2) == [c]
    assert pacer.deadline() == 5.5
    assert pacer.on_timer(5.5) == [STATUS_DUE]


def test_captions_page_gets_no_status_snapshots():
    pacer = FeedPacer(wants_status=False)
    state = ev(LISTENING)
    assert pacer.on_event(state, 1.0) == [state]
    assert pacer.deadline() is None


def test_encoded_turn_leaves_out_word_timings():
    turn = TurnFinal(session_id="s", turn_order=0, text="one", words=({"text": "one"},))
    message = json.loads(encode_event(ev(turn)))
    assert message["kind"] == "turn.final" and message["v"] == SCHEMA_VERSION
    assert message["data"] == {
        "session_id": "s",
        "turn_order": 0,
        "text": "one",
        "speaker": None,
        "late": False,
        "offset_ms": None,
    }


def test_unknown_kinds_are_ignored_and_nothing_means_everything():
    assert parse_kinds("turn.,state,bogus") == (StateChanged, TurnPartial, TurnFinal)
    assert parse_kinds("") == parse_kinds("bogus") == parse_kinds(",".join(FEED_KINDS))
    assert len(parse_kinds("")) == len(SCHEMA)


def test_history_keeps_the_final_in_place_of_its_partials():
    history = History(max_turns=10)
    history.add(partial("one"))
    history.add(final("One."))
    history.add(partial("one"))  # late
    history.add(partial("two", turn_order=1))
    assert [p.event for p in history.captions()] == [final("One.").event, partial("two", 1).event]


def test_history_is_bounded():
    history = History(max_turns=3, max_errors=2)
    for i in range(10):
        history.add(final(str(i), turn_order=i))
        history.add(error(str(i)))
    assert [p.event.text for p in history.captions()] == ["7", "8", "9"]
    assert [p.event.message for p in history.errors] == ["8", "9"]
