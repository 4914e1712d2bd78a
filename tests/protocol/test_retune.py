"""Retuning a live session and ending a turn, sans I/O: what goes out, and when."""

from __future__ import annotations

import pytest

from appliance.protocol.streaming import (
    STREAM_RATE,
    Connect,
    Notice,
    Phase,
    ReconnectAfter,
    SendAudio,
    SendJson,
)
from appliance.protocol.tuning import MAX_KEYTERM_CHARS, MAX_KEYTERMS, Tuning
from tests.protocol.test_streaming import begin, make, of, run_realtime, streaming

START = Tuning(keyterms_prompt=("Pi",), min_turn_silence=200, max_turn_silence=1000)


def sent_json(actions: list) -> list[dict]:
    return [a.message for a in of(actions, SendJson)]


def test_a_retune_while_streaming_sends_only_what_changed_and_keeps_the_connection():
    s = make()
    s.tuning = START
    s.connection_tuning()
    streaming(s)
    actions = s.retune(1.0, START.merged(keyterms_prompt=("Pi", "Zero")))
    update = {"type": "UpdateConfiguration", "keyterms_prompt": ["Pi", "Zero"]}
    assert sent_json(actions) == [update]
    assert not of(actions, Connect) and s.phase is Phase.STREAMING
    assert s.account.connections == 1


def test_audio_keeps_flowing_across_a_retune():
    s = make(chunk_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    before = of(run_realtime(s, 0.0, 1.0), SendAudio)
    s.retune(1.0, Tuning(min_turn_silence=100, max_turn_silence=900))
    after = of(run_realtime(s, 1.0, 2.0), SendAudio)
    assert before[-1].end == after[0].start  # no gap, nothing resent
    assert after[-1].end >= 2 * STREAM_RATE - 100 * STREAM_RATE // 1000


def test_the_same_tuning_again_sends_nothing():
    s = make()
    s.tuning = START
    s.connection_tuning()
    streaming(s)
    assert sent_json(s.retune(1.0, START)) == []


def test_a_reconnect_asks_for_the_retuned_configuration_not_the_first_one():
    s = make()
    s.tuning = START
    s.connection_tuning()
    streaming(s)
    retuned = START.merged(keyterms_prompt=("Zero",), max_turn_silence=2000)
    s.retune(1.0, retuned)
    (after,) = of(s.closed(2.0, 1011), ReconnectAfter)
    assert of(s.tick(2.0 + after.delay + 1e-6), Connect)
    assert s.connection_tuning() == retuned
    s.opened(3.0)
    assert sent_json(s.message(3.0, begin("s2"))) == []  # the URL already said it all


def test_a_retune_while_reconnecting_is_sent_right_after_begin():
    s = make()
    s.tuning = START
    s.connection_tuning()
    streaming(s)
    (after,) = of(s.closed(1.0, 1011), ReconnectAfter)
    s.tick(1.0 + after.delay + 1e-6)
    s.connection_tuning()  # the runner builds the URL with the old tuning...
    s.retune(1.5, START.merged(min_turn_silence=400))  # ...then the person retunes
    s.opened(2.0)
    actions = s.message(2.0, begin("s2"))
    assert sent_json(actions) == [{"type": "UpdateConfiguration", "min_turn_silence": 400}]
    first_audio = next((i for i, a in enumerate(actions) if isinstance(a, SendAudio)), len(actions))
    assert actions.index(of(actions, SendJson)[0]) < first_audio


@pytest.mark.parametrize(
    ("tuning", "problem"),
    [
        (Tuning(keyterms_prompt=tuple(f"t{i}" for i in range(MAX_KEYTERMS + 1))), "at most 100"),
        (Tuning(keyterms_prompt=("x" * (MAX_KEYTERM_CHARS + 1),)), "at most 50 characters"),
        (Tuning(keyterms_prompt=(" ",)), "empty"),
        (Tuning(min_turn_silence=-1), "min_turn_silence must be in"),
        (Tuning(max_turn_silence=10_001), "max_turn_silence must be in"),
        (Tuning(min_turn_silence=900, max_turn_silence=100), "may not exceed"),
    ],
)
def test_a_tuning_the_service_would_refuse_is_refused_and_changes_nothing(tuning, problem):
    s = make()
    s.tuning = START
    streaming(s)
    with pytest.raises(ValueError, match=problem):
        s.retune(1.0, tuning)
    assert s.tuning == START


def test_end_turn_sends_force_endpoint_on_a_streaming_connection():
    s = make()
    streaming(s)
    assert sent_json(s.end_turn(1.0)) == [{"type": "ForceEndpoint"}]


def test_end_turn_without_a_streaming_connection_only_says_so():
    s = make()
    s.start(0.0)
    actions = s.end_turn(0.5)
    assert not of(actions, SendJson) and of(actions, Notice)


def test_nothing_is_retuned_or_ended_once_stopping():
    s = make()
    streaming(s)
    s.stop(1.0, 0)
    assert not of(s.retune(1.0, START), SendJson)
    assert not of(s.end_turn(1.0), SendJson)
