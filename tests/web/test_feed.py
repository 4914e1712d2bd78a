"""Feed pacing and history, without sockets or sleeps (times are plain numbers)."""

from __future__ import annotations

import json

from appliance.events import (
    ERROR,
    LEVEL,
    SPOOL,
    STATE,
    TURN_FINAL,
    TURN_PARTIAL,
    Event,
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


def ev(kind: str, **data) -> Event:
    return Event(kind, data, 0.0, next(_seq))


def test_level_readings_are_limited_to_one_per_interval_keeping_the_newest():
    pacer = FeedPacer(level_interval=0.2, wants_status=False)
    first, second, third = ev(LEVEL, dbfs=-40), ev(LEVEL, dbfs=-30), ev(LEVEL, dbfs=-20)
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
        sent += pacer.on_event(ev(LEVEL, dbfs=-i), now)
        deadline = pacer.deadline()
        if deadline is not None and deadline <= now:
            sent += pacer.on_timer(now)
    assert len(sent) == 5


def test_captions_pass_straight_through():
    pacer = FeedPacer(wants_status=True)
    turns = [ev(TURN_PARTIAL, text="one"), ev(TURN_PARTIAL, text="one two")]
    assert [pacer.on_event(t, 1.0) for t in turns] == [[turns[0]], [turns[1]]]


def test_status_changes_trigger_at_most_one_snapshot_per_interval():
    pacer = FeedPacer(status_interval=0.5, wants_status=True)
    a, b, c = ev(STATE, state="listening"), ev(SPOOL, waiting=1), ev(ERROR, message="x")
    assert pacer.on_event(a, 5.0) == [a, STATUS_DUE]
    assert pacer.on_event(b, 5.1) == [b]
    assert pacer.on_event(c, 5.2) == [c]
    assert pacer.deadline() == 5.5
    assert pacer.on_timer(5.5) == [STATUS_DUE]


def test_captions_page_gets_no_status_snapshots():
    pacer = FeedPacer(wants_status=False)
    state = ev(STATE, state="listening")
    assert pacer.on_event(state, 1.0) == [state]
    assert pacer.deadline() is None


def test_encoded_turn_leaves_out_word_timings():
    message = json.loads(
        encode_event(ev(TURN_FINAL, session_id="s", turn_order=0, text="one", words=[{"w": 1}]))
    )
    assert message["kind"] == TURN_FINAL
    assert message["data"] == {"session_id": "s", "turn_order": 0, "text": "one"}


def test_unknown_kinds_are_ignored_and_nothing_means_everything():
    assert parse_kinds("turn.,state,bogus") == ("turn.", "state")
    assert parse_kinds("") == FEED_KINDS
    assert parse_kinds("bogus") == FEED_KINDS


def test_history_keeps_the_final_in_place_of_its_partials():
    history = History(max_turns=10)
    history.add(ev(TURN_PARTIAL, session_id="s", turn_order=0, text="one"))
    history.add(ev(TURN_FINAL, session_id="s", turn_order=0, text="One."))
    history.add(ev(TURN_PARTIAL, session_id="s", turn_order=0, text="one"))  # late
    history.add(ev(TURN_PARTIAL, session_id="s", turn_order=1, text="two"))
    assert [(e.kind, e.data["text"]) for e in history.captions()] == [
        (TURN_FINAL, "One."),
        (TURN_PARTIAL, "two"),
    ]


def test_history_is_bounded():
    history = History(max_turns=3, max_errors=2)
    for i in range(10):
        history.add(ev(TURN_FINAL, session_id="s", turn_order=i, text=str(i)))
        history.add(ev(ERROR, message=str(i)))
    assert [e.data["text"] for e in history.captions()] == ["7", "8", "9"]
    assert [e.data["message"] for e in history.errors] == ["8", "9"]
