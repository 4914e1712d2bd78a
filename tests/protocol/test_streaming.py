"""The sans-I/O streaming session: every close code, message kind and pacing rule, no sockets."""

from __future__ import annotations

import itertools
import json
import logging
import random

import pytest

from appliance.protocol.failures import ConnectFailure, Failure
from appliance.protocol.policy import ReconnectPolicy
from appliance.protocol.retry import Backoff, RetryLimits
from appliance.protocol.streaming import (
    STREAM_RATE,
    Close,
    Connect,
    EmitTurn,
    Finish,
    Notice,
    Phase,
    ReconnectAfter,
    SendAudio,
    SendJson,
    SessionAccount,
    Spool,
    StreamingLimits,
    StreamingSession,
    _Intervals,
)

MS = STREAM_RATE // 1000


def finished(s, actions):
    """The account, once ``actions`` ended the session."""
    assert len(of(actions, Finish)) == 1 and s.finished
    return s.account


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def begin(sid="s1"):
    return json.dumps({"type": "Begin", "id": sid, "expires_at": 2_000_000_000})


def turn(order, words, final=True, formatted=False, text=None):
    """A Turn; ``words`` are (text, start_ms, end_ms) relative to the connection's audio."""
    return json.dumps(
        {
            "type": "Turn",
            "turn_order": order,
            "turn_is_formatted": formatted,
            "end_of_turn": final,
            "transcript": text if text is not None else " ".join(w[0] for w in words),
            "end_of_turn_confidence": 0.9,
            "utterance": "",
            "words": [
                {"text": t, "start": s, "end": e, "confidence": 0.9, "word_is_final": True}
                for t, s, e in words
            ],
        }
    )


#: The chunk these tests' frame arithmetic is written for (the device's default is larger).
CHUNK_MS = 100


def make(*, format_turns: bool = False, **overrides) -> StreamingSession:
    limits = StreamingLimits(**{"chunk_ms": CHUNK_MS, **overrides})
    policy = ReconnectPolicy(limits.reconnect, random.Random(1))
    return StreamingSession(limits, policy=policy, format_turns=format_turns)


def streaming(session: StreamingSession, now: float = 0.0, sid: str = "s1") -> list:
    actions = session.start(now) if session.phase is Phase.IDLE else session.tick(now)
    assert of(actions, Connect)
    session.opened(now)
    return session.message(now, begin(sid))


def run_realtime(session: StreamingSession, t0: float, t1: float, step: float = 0.02) -> list:
    """Advance time, with audio arriving in real time from index 0 at time 0."""
    actions = []
    t = t0
    while t < t1 - 1e-9:
        t = round(t + step, 6)
        actions += session.audio(t, int(t * STREAM_RATE))
    return actions


# --------------------------------------------------------------------------- sending


def test_steady_state_sends_whole_chunks_no_faster_than_real_time():
    s = make(chunk_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    actions = run_realtime(s, 0.0, 3.0)
    frames = of(actions, SendAudio)
    assert frames[0].start == 0
    assert all(f.end - f.start == 100 * MS and f.pad == 0 for f in frames)
    assert all(a.end == b.start for a, b in itertools.pairwise(frames))
    assert frames[-1].end <= 3.0 * STREAM_RATE


def test_a_chunk_captured_but_held_in_the_resampler_goes_at_once_a_little_short():
    s = make(chunk_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    frames = of(s.audio(0.1, 90 * MS, held_back=10 * MS), SendAudio)
    assert [(f.start, f.end) for f in frames] == [(0, 90 * MS)]
    # The next wake-up is due when the next chunk is captured, counting what is held.
    s.audio(0.1, 90 * MS, held_back=20 * MS)
    assert s.audio_wanted() == 90 * MS + 100 * MS - 20 * MS


def test_held_back_audio_never_makes_a_frame_shorter_than_the_legal_minimum():
    s = make(chunk_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    assert not of(s.audio(0.1, 40 * MS, held_back=60 * MS), SendAudio)
    assert s.audio_wanted() == 50 * MS
    assert of(s.audio(0.11, 50 * MS, held_back=60 * MS), SendAudio)


def test_a_backlog_within_the_lead_goes_at_once_in_one_legal_frame():
    s = make(chunk_ms=100, max_lead_seconds=1.0)
    s.audio(0.0, int(0.6 * STREAM_RATE))  # pre-roll and connect time
    frames = of(streaming(s), SendAudio)
    assert [(f.start, f.end) for f in frames] == [(0, int(0.6 * STREAM_RATE))]


def test_a_backlog_longer_than_the_live_window_is_spooled_and_live_resumes_near_now():
    s = make(chunk_ms=100, max_lead_seconds=1.0, max_lag_seconds=1.0)
    s.audio(0.0, 6 * STREAM_RATE)  # six seconds waiting after a reconnect
    actions = streaming(s, 6.0)
    (spool,) = of(actions, Spool)
    assert spool.start == 0 and 4 * STREAM_RATE <= spool.end <= 5 * STREAM_RATE
    frames = of(actions, SendAudio)
    assert frames[0].start == spool.end
    assert sum(f.end - f.start for f in frames) <= STREAM_RATE  # one frame of lead at most


def test_audio_never_leads_wall_time_since_begin_by_more_than_one_frame():
    """Whatever the backlog and however capture arrives, the lead stays within one frame."""
    rng = random.Random(7)
    for _ in range(30):
        s = make(chunk_ms=rng.choice([50, 100, 200]), max_lag_seconds=rng.uniform(0, 3))
        backlog = rng.uniform(0, 8) * STREAM_RATE
        s.audio(0.0, int(backlog))
        began = rng.uniform(0, 2)
        sent = 0
        for f in of(streaming(s, began), SendAudio):
            sent += f.end - f.start + f.pad
        assert sent <= STREAM_RATE
        t = began
        while t < began + 10:
            t += rng.uniform(0.001, 0.3)
            arrived = int(backlog + (t - began) * STREAM_RATE)
            for f in of(s.audio(t, arrived), SendAudio):
                sent += f.end - f.start + f.pad
                assert 50 * MS <= f.end - f.start + f.pad <= 1000 * MS
            assert sent / STREAM_RATE - (t - began) <= 1.0 + 1e-9


def test_stop_sends_the_tail_in_legal_frames_then_terminates():
    s = make(chunk_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    end = STREAM_RATE + 10 * MS + 3  # a 10 ms tail
    actions = s.stop(1.0, end)
    frames = of(actions, SendAudio)
    assert frames and frames[-1].end == end
    assert all(f.end - f.start + f.pad >= 50 * MS for f in frames)
    assert of(actions, SendJson) == [SendJson({"type": "Terminate"})]
    assert s.phase is Phase.TERMINATING


def test_a_tiny_session_is_padded_to_a_legal_frame():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    frames = of(s.stop(0.01, 20 * MS), SendAudio)
    assert frames == [SendAudio(0, 20 * MS, 30 * MS)]


def test_no_audio_is_sent_before_begin():
    s = make()
    s.audio(0.0, STREAM_RATE)
    s.start(0.0)
    assert s.opened(0.0) == []
    assert not of(s.tick(0.1), SendAudio)
    assert of(s.message(0.2, begin()), SendAudio)


# --------------------------------------------------------------------------- delivery


def test_final_turn_confirms_to_its_last_word_plus_guard():
    s = make(resume_guard_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.message(2.0, turn(0, [("1", 300, 420)], final=False))
    assert s.confirmed == 200 * MS  # a partial confirms only what lies before its first word
    actions = s.message(2.0, turn(0, [("1", 300, 420), ("2", 500, 620)]))
    assert s.confirmed == 720 * MS
    (emitted,) = of(actions, EmitTurn)
    assert emitted.turn.text == "1 2" and emitted.turn.final and emitted.turn.order == 0


def test_after_a_drop_sending_resumes_from_the_confirmed_point():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.message(2.0, turn(0, [("5", 100, 220)]))
    confirmed = s.confirmed
    actions = s.closed(2.0, None)
    (delay,) = of(actions, ReconnectAfter)
    actions = s.tick(2.0 + delay.delay)
    assert of(actions, Connect)
    s.opened(2.1 + delay.delay)
    frames = of(s.message(2.2 + delay.delay, begin("s2")), SendAudio)
    assert frames[0].start == confirmed
    assert s.account.resent_samples > 0
    # Word times on the new connection are relative to where it started.
    (emitted,) = of(s.message(3.0 + delay.delay, turn(0, [("6", 50, 170)])), EmitTurn)
    assert emitted.turn.words[0].start_ms == round(confirmed / MS) + 50
    assert emitted.turn.order == 1


def test_termination_confirms_everything_and_finishes_balanced():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.stop(2.0, 2 * STREAM_RATE)
    actions = s.message(2.1, json.dumps({"type": "Termination", "audio_duration_seconds": 2}))
    assert of(actions, Close)
    actions = s.closed(2.2, 1000)
    acc = finished(s, actions)
    assert (acc.captured_samples, acc.streamed_samples, acc.spooled_samples) == (32000, 32000, 0)
    assert acc.balanced and s.finished


def test_missing_termination_spools_the_unconfirmed_rest():
    s = make(termination_timeout_seconds=2.0, resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.message(2.0, turn(0, [("1", 100, 500)]))
    s.stop(2.0, 2 * STREAM_RATE)
    assert not of(s.tick(3.0), Close)
    assert of(s.tick(4.1), Close)
    actions = s.closed(4.2, 1000)
    assert of(actions, Spool) == [Spool(500 * MS, 2 * STREAM_RATE)]
    assert not [n for n in of(actions, Notice) if "while stopping" in n.message]  # an end
    acc = finished(s, actions)
    assert acc.streamed_samples == 500 * MS and acc.spooled_samples == 1500 * MS
    assert acc.balanced


def test_formatted_turns_are_emitted_once_and_an_orphan_unformatted_final_is_kept():
    s = make(format_turns=True)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    words = [("one", 100, 300)]
    assert not of(s.message(2.0, turn(0, words)), EmitTurn)
    assert s.confirmed > 0  # the audio is confirmed by the unformatted final
    (emitted,) = of(s.message(2.0, turn(0, words, formatted=True, text="One.")), EmitTurn)
    assert emitted.turn.text == "One." and emitted.turn.formatted
    s.message(2.0, turn(1, [("two", 900, 1100)]))
    (orphan,) = of(s.closed(2.1, None), EmitTurn)  # formatted copy never came
    assert orphan.turn.text == "two" and orphan.turn.order == 1


def test_silence_without_evidence_is_never_confirmed():
    s = make(history_samples=60 * STREAM_RATE)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 20.0)
    assert s.confirmed == 0
    assert s.next_timer() is None  # and no timer pretends otherwise


def test_speech_started_confirms_what_lies_before_it():
    s = make(resume_guard_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 3.0)
    s.message(3.0, json.dumps({"type": "SpeechStarted", "timestamp": 2000, "confidence": 0.9}))
    assert s.confirmed == 1900 * MS


def test_unconfirmed_audio_nearing_the_buffer_history_is_spooled_while_streaming():
    s = make(history_samples=6 * STREAM_RATE, history_margin_samples=2 * STREAM_RATE)
    s.audio(0.0, 0)
    streaming(s)
    spools = of(run_realtime(s, 0.0, 8.0), Spool)
    assert spools and spools[0].start == 0
    # Nothing older than history - margin is left unconfirmed.
    assert s.confirmed >= 8 * STREAM_RATE - 4 * STREAM_RATE - STREAM_RATE


def test_a_stall_loses_nothing_the_stalled_connection_never_confirmed():
    """The server takes audio for 5 s, says nothing, then resets: all of it is resent or kept."""
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    s.message(1.0, turn(0, [("1", 100, 500)]))
    run_realtime(s, 1.0, 6.0)  # the stall: audio sent, nothing back
    assert s.confirmed == 500 * MS
    actions = s.closed(6.0, None)
    (after,) = of(actions, ReconnectAfter)
    t = 6.0 + after.delay + 1e-6
    actions += s.audio(t, int(t * STREAM_RATE))
    assert of(actions, Connect)
    s.opened(t)
    actions += s.message(t, begin("s2"))
    spools = of(actions, Spool)
    frames = of(actions, SendAudio)
    assert spools[0].start == 500 * MS and frames[0].start == spools[-1].end
    assert all(a.end == b.start for a, b in itertools.pairwise(spools))
    s.stop(t, int(t * STREAM_RATE))
    s.message(t + 0.1, json.dumps({"type": "Termination", "audio_duration_seconds": 1}))
    acc = finished(s, s.closed(t + 0.2, 1000))
    assert acc.balanced and acc.lost_samples == 0
    assert acc.streamed_samples + acc.spooled_samples == int(t * STREAM_RATE)


def test_samples_reported_lost_are_counted_not_streamed():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    s.lost(0, 800)
    s.message(1.0, turn(0, [("1", 100, 500)]))
    assert s.account.lost_samples == 800
    assert s.account.streamed_samples == 500 * MS - 800


# --------------------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "text",
    [
        "not json at all {",
        b"\xff\xfe garbage",
        "[1, 2, 3]",
        '"a string"',
        "{}",
        '{"type": "Turn"}',
        '{"type": "Turn", "end_of_turn": true, "words": "nope"}',
        '{"type": "Turn", "end_of_turn": true, "words": [{"end": "x"}, 5, {"text": "7"}]}',
        '{"type": "Begin"}',
        '{"type": "Heartbeat"}',
        '{"type": "Warning", "warning": "x"}',
        '{"type": "SomethingNew", "x": 1}',
        '{"type": "Error", "error_code": 3005}',
        '{"type": "SpeechStarted"}',
    ],
)
def test_odd_messages_are_survived(text):
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    s.message(1.0, text)
    # The session still works afterwards.
    frames = of(run_realtime(s, 1.0, 1.5), SendAudio)
    assert frames
    s.message(1.5, turn(0, [("9", 100, 200)]))
    assert s.confirmed >= 200 * MS


def test_garbled_messages_are_counted():
    s = make()
    streaming(s)
    s.message(0.0, "{{{")
    s.message(0.0, '{"type": "Mystery"}')
    assert (s.garbled_messages, s.ignored_messages) == (1, 1)


# --------------------------------------------------------------------------- close codes


def drop(s: StreamingSession, now: float, code: int | None, reason: str = "") -> list:
    return s.closed(now, code, reason)


@pytest.mark.parametrize("code", [None, 1006, 1011, 1000, 3005, 3009])
def test_transient_closes_reconnect_with_jittered_backoff(code):
    s = make(backoff_base_seconds=0.5, backoff_max_seconds=8.0)
    streaming(s)
    actions = drop(s, 1.0, code)
    (after,) = of(actions, ReconnectAfter)
    assert 0.1 <= after.delay <= 0.5  # never sooner than the retry floor
    assert not after.auth_failure
    assert s.phase is Phase.WAITING
    assert of(s.tick(1.0 + after.delay + 1e-6), Connect)


@pytest.mark.parametrize("code", [3006, 3007])
def test_protocol_violations_are_logged_loudly_with_the_frame_size(code):
    s = make(chunk_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 0.5)
    actions = drop(s, 0.5, code, "Input duration violation: 20 ms")
    errors = [n for n in of(actions, Notice) if n.level == logging.ERROR]
    assert errors and "1600 samples" in errors[0].message and "3200 bytes" in errors[0].message
    assert of(actions, ReconnectAfter)


def test_one_token_refusal_retries_soon_with_a_new_token_but_not_within_the_floor():
    s = make(retry_floor_seconds=0.1, quick_reconnect_max_seconds=0.3)
    streaming(s)
    actions = drop(s, 1.0, 1008, "Unauthorized: token has already been used")
    delay = of(actions, ReconnectAfter)[0].delay
    assert 0.1 <= delay <= 0.3
    assert not of(s.tick(1.0 + 0.099), Connect)
    assert of(s.tick(1.0 + delay), Connect) == [Connect(2)]


def test_repeated_token_refusals_mean_bad_credentials_and_a_slow_retry():
    s = make(auth_retry_seconds=60.0)
    s.start(0.0)
    s.opened(0.0)
    s.closed(0.1, 1008)
    s.tick(0.5)
    s.opened(0.5)
    actions = s.closed(0.6, 1008)
    (after,) = of(actions, ReconnectAfter)
    assert after.auth_failure and 45.0 <= after.delay <= 60.0  # jittered, never a fixed period
    assert [n for n in of(actions, Notice) if n.level == logging.ERROR]
    connects = [a for t in range(1, 620) for a in of(s.tick(0.6 + t * 0.1), Connect)]
    assert connects == [Connect(3)]  # only after the slow retry


def test_token_endpoint_auth_failure_goes_to_slow_retry_after_threshold():
    s = make(auth_retry_seconds=60.0, auth_failures_before_slow_retry=1)
    s.start(0.0)
    (after,) = of(s.connect_failed(0.1, Failure(ConnectFailure.AUTH, "HTTP 401")), ReconnectAfter)
    assert 45.0 <= after.delay <= 60.0 and after.auth_failure


def test_rate_limited_connect_honours_retry_after():
    s = make()
    s.start(0.0)
    (after,) = of(
        s.connect_failed(0.1, Failure(ConnectFailure.RATE_LIMITED, "HTTP 429", retry_after=7.0)),
        ReconnectAfter,
    )
    assert after.delay >= 7.0


def test_expiry_after_a_long_session_rolls_over_at_once():
    s = make(healthy_after_seconds=5.0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 10.0)
    actions = drop(s, 10.0, 3008, "Session expired")
    assert of(actions, Connect)  # no delay at all
    s.opened(10.1)
    frames = of(s.message(10.2, begin("s2")), SendAudio)
    assert frames[0].start == s.confirmed


def test_expiry_right_after_begin_backs_off_instead_of_looping():
    s = make()
    streaming(s)
    actions = drop(s, 0.1, 3008)
    assert not of(actions, Connect)
    assert of(actions, ReconnectAfter)


def test_a_server_that_keeps_failing_is_never_hammered():
    s = make(backoff_base_seconds=0.5, backoff_max_seconds=8.0)
    s.start(0.0)
    connects = 1
    t = 0.0
    delays = []
    while t < 120.0:
        t = round(t + 0.01, 6)
        for a in s.tick(t):
            if isinstance(a, Connect):
                connects += 1
                s.opened(t)
                s.message(t, begin())
                delays += [r.delay for r in of(s.closed(t + 0.001, 3005), ReconnectAfter)]
        if s.phase is Phase.CONNECTING:
            pass
        if connects == 1 and s.phase is Phase.CONNECTING:
            s.opened(t)
            s.message(t, begin())
            delays += [r.delay for r in of(s.closed(t, 3005), ReconnectAfter)]
    assert all(0.1 <= d <= 8.0 for d in delays)
    assert len(set(delays)) == len(delays)  # never the same delay twice
    assert connects < 40  # a hot loop would connect thousands of times


def test_no_begin_in_time_closes_and_retries():
    s = make(begin_timeout_seconds=2.0)
    s.start(0.0)
    s.opened(0.0)
    assert of(s.tick(2.1), Close)
    assert of(s.closed(2.2, 1000), ReconnectAfter)


def test_token_fingerprints_cannot_repeat():
    s = make()
    assert s.note_token("a")
    assert s.note_token("b")
    assert not s.note_token("a")


def test_every_connection_is_a_new_connect_action():
    s = make()
    attempts = []
    attempts += [a.attempt for a in of(s.start(0.0), Connect)]
    for i in range(5):
        s.opened(i)
        s.message(i, begin())
        s.closed(i + 0.5, 3005)
        attempts += [a.attempt for a in of(s.tick(i + 0.99), Connect)]
    assert attempts == sorted(set(attempts))


# --------------------------------------------------------------------------- outages


def test_a_long_outage_goes_to_the_spool_and_live_resumes_after_it():
    s = make(history_samples=20 * STREAM_RATE, resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    s.message(1.0, turn(0, [("1", 100, 500)]))
    s.closed(1.0, None)
    spooled = []
    t = 1.0
    while t < 6.0:
        t = round(t + 0.05, 6)
        for a in s.audio(t, int(t * STREAM_RATE)):
            if isinstance(a, Spool):
                spooled.append(a)
            if isinstance(a, Connect):
                s.connect_failed(t, Failure(ConnectFailure.NETWORK, "refused"))
    assert spooled[0].start == 500 * MS
    assert all(a.end == b.start for a, b in itertools.pairwise(spooled))
    # While offline the backlog never exceeds the live window plus one spool batch.
    assert int(t * STREAM_RATE) - spooled[-1].end <= 3 * STREAM_RATE
    # Network back: live resumes where the spool stopped.
    t = 40.0
    spooled += of(s.audio(t, int(t * STREAM_RATE)), Spool)
    while s.phase is not Phase.CONNECTING:
        t += 0.5
        spooled += of(s.tick(t), Spool)
    s.opened(t)
    actions = s.message(t, begin("s2"))
    spooled += of(actions, Spool)
    frames = of(actions, SendAudio) + of(s.audio(t + 0.2, int((t + 0.2) * STREAM_RATE)), SendAudio)
    t += 0.2
    assert frames[0].start == spooled[-1].end
    end = int(t * STREAM_RATE)
    s.stop(t, end)
    s.message(t, json.dumps({"type": "Termination", "audio_duration_seconds": 1}))
    acc = finished(s, s.closed(t, 1000))
    assert acc.balanced and acc.captured_samples == end
    assert acc.spooled_samples == sum(sp.end - sp.start for sp in spooled)


def test_stopping_while_offline_spools_everything_unconfirmed():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.message(2.0, turn(0, [("1", 100, 1000)]))
    s.closed(2.0, None)
    actions = s.stop(2.5, int(2.5 * STREAM_RATE))
    assert of(actions, Spool) == [Spool(1000 * MS, int(2.5 * STREAM_RATE))]
    acc = finished(s, actions)
    assert acc.balanced and acc.streamed_samples == 1000 * MS


def test_spool_refusing_a_range_moves_it_from_spooled_to_lost():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.message(2.0, turn(0, [("1", 100, 1000)]))
    s.closed(2.0, None)
    actions = s.stop(2.5, int(2.5 * STREAM_RATE))
    acc = finished(s, actions)
    spooled = acc.spooled_samples
    acc.spool_failed(300)  # the runner learns later that the spool kept all but 300
    assert acc.balanced and acc.lost_samples == 300 and acc.spooled_samples == spooled - 300
    acc.spool_failed(10 * spooled)  # never more than was handed over
    assert acc.balanced and acc.spooled_samples == 0 and acc.lost_samples == spooled


def test_a_drop_while_draining_spools_the_rest_instead_of_reconnecting():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.stop(2.0, 2 * STREAM_RATE)
    actions = s.closed(2.05, None)
    assert not of(actions, Connect)
    assert of(actions, Spool) == [Spool(0, 2 * STREAM_RATE)]
    assert finished(s, actions).balanced


def test_limits_are_validated():
    with pytest.raises(ValueError):
        StreamingLimits(chunk_ms=20)
    with pytest.raises(ValueError):
        StreamingLimits(backlog_frame_ms=1500)
    with pytest.raises(ValueError):
        StreamingLimits(max_lead_seconds=1.5)
    with pytest.raises(ValueError):
        StreamingLimits(max_lead_seconds=0.05, chunk_ms=100)


# --------------------------------------------------------------------------- quick reconnect


def test_a_drop_after_fresh_audio_reconnects_almost_at_once():
    s = make(quick_reconnect_max_seconds=0.2)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    (after,) = of(drop(s, 2.0, None), ReconnectAfter)
    assert 0.1 <= after.delay <= 0.2
    assert of(s.tick(2.0 + after.delay + 1e-6), Connect)


def test_after_a_quick_reconnect_failures_back_off_exponentially_again():
    s = make(quick_reconnect_max_seconds=0.2)
    s.policy.backoff = Backoff(RetryLimits(0.5, 8.0), random.Random(1))
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    t = 2.0
    delay = of(drop(s, t, None), ReconnectAfter)[0].delay
    ceilings = []
    for _ in range(5):
        t += delay + 1e-6
        assert of(s.tick(t), Connect)
        ceilings.append(s.policy.backoff.ceiling())
        delay = of(s.connect_failed(t, Failure(ConnectFailure.NETWORK, "refused")), ReconnectAfter)[
            0
        ].delay
        assert delay <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_a_second_drop_within_the_spacing_is_not_quick():
    s = make(quick_reconnect_max_seconds=0.1, quick_reconnect_spacing_seconds=1.0)
    s.policy.backoff = Backoff(RetryLimits(0.5, 8.0), random.Random(3))
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    assert of(drop(s, 1.0, None), ReconnectAfter)[0].delay == 0.1
    s.tick(1.1)
    s.opened(1.1)
    s.message(1.1, begin("s2"))
    run_realtime(s, 1.1, 1.5)  # fresh audio again, but only half a second later
    assert s.policy.backoff.attempt == 0
    drop(s, 1.5, None)
    assert s.policy.backoff.attempt == 1  # this delay came from the backoff


def test_a_server_that_drops_every_connection_after_audio_is_never_hammered():
    s = make(backoff_base_seconds=0.5, backoff_max_seconds=8.0)
    s.audio(0.0, 0)
    s.start(0.0)
    connects = 1
    t = 0.0
    while t < 120.0:
        t = round(t + 0.01, 6)
        actions = s.audio(t, int(t * STREAM_RATE))
        connects += len(of(actions, Connect))
        if s.phase is Phase.CONNECTING:
            s.opened(t)
            actions = s.message(t, begin())
        if s.phase is Phase.STREAMING and of(actions, SendAudio):
            s.closed(t, 1006)  # the server takes one burst of audio, then drops
    assert connects <= 121  # at most one quick reconnect a second (spacing), never a hot loop


# --------------------------------------------------------------------------- wake-ups


def test_streaming_wants_the_end_of_the_next_chunk():
    s = make(chunk_ms=100)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    assert s.sent == 16_000
    assert s.audio_wanted() == 16_000 + 1600
    assert of(s.audio(1.1, 16_000 + 1600), SendAudio)
    assert s.audio_wanted() == 16_000 + 3200


def test_next_timer_is_when_pacing_lets_the_waiting_frame_go():
    s = make(chunk_ms=100, max_lag_seconds=1.0)
    s.audio(0.0, int(1.8 * STREAM_RATE))  # a backlog within the live window, over the lead
    streaming(s)
    due = s.next_timer()
    assert due is not None and due > 0.0
    assert not of(s.tick(due - 0.01), SendAudio)
    assert of(s.tick(due + 1e-6), SendAudio)


def test_next_timer_is_the_retry_time_while_waiting():
    s = make()
    streaming(s)
    (after,) = of(drop(s, 1.0, 1006), ReconnectAfter)
    assert s.next_timer() == pytest.approx(1.0 + after.delay)


# --------------------------------------------------------------------------- pinned edges


def test_a_termination_short_of_what_was_sent_keeps_the_rest():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 4.0)
    s.stop(4.0, 4 * STREAM_RATE)
    actions = s.message(4.1, json.dumps({"type": "Termination", "audio_duration_seconds": 1}))
    (notice,) = [n for n in of(actions, Notice) if "server reports 1 s" in n.message]
    assert notice.level == logging.WARNING
    acc = finished(s, s.closed(4.2, 1000))
    # The server had at most 2 s (1 s, whole seconds): the other 2 s are kept.
    assert acc.streamed_samples == 2 * STREAM_RATE and acc.spooled_samples == 2 * STREAM_RATE


def test_a_termination_covering_what_was_sent_confirms_it_all():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.stop(2.0, 2 * STREAM_RATE)
    actions = s.message(2.1, json.dumps({"type": "Termination", "audio_duration_seconds": 2}))
    assert not [n for n in of(actions, Notice) if "server reports" in n.message]
    assert s.confirmed == 2 * STREAM_RATE


def test_terminate_waits_for_the_backlog_while_there_is_time():
    s = make(max_lag_seconds=1.0)
    s.audio(0.0, int(1.5 * STREAM_RATE))
    streaming(s)
    actions = s.stop(0.0, int(1.5 * STREAM_RATE))
    assert not of(actions, SendJson) and s.phase is Phase.STREAMING
    actions = s.tick(0.6)
    assert of(actions, SendAudio) and of(actions, SendJson) == [SendJson({"type": "Terminate"})]


def test_a_fatal_connect_failure_retries_slowly_and_says_so():
    s = make(auth_retry_seconds=100.0)
    s.start(0.0)
    actions = s.connect_failed(0.1, Failure(ConnectFailure.FATAL, "HTTP 410 on upgrade"))
    (after,) = of(actions, ReconnectAfter)
    assert 75.0 <= after.delay <= 100.0 and not after.auth_failure
    assert [n for n in of(actions, Notice) if n.level == logging.ERROR]


def test_a_termination_while_not_stopping_rolls_over_to_a_new_connection():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    s.message(1.0, json.dumps({"type": "Termination", "audio_duration_seconds": 1}))
    actions = s.closed(1.1, 1000)
    assert of(actions, Connect) and not of(actions, Finish)
    assert s.confirmed == STREAM_RATE


def test_overlapping_lost_ranges_are_counted_once():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    s.lost(0, 800)
    s.lost(400, 1200)  # overlaps the first
    s.lost(1200, 1600)  # touches it
    s.lost(5000, 4000)  # empty: ignored
    s.message(1.0, turn(0, [("1", 100, 500)]))
    assert s.account.lost_samples == 1600
    assert s.account.streamed_samples == 500 * MS - 1600


def test_events_in_the_wrong_phase_do_nothing():
    s = make()
    assert s.opened(0.0) == [] and s.message(0.0, begin()) == [] and s.closed(0.0, 1000) == []
    assert s.tick(0.0) == []
    s.start(0.0)
    assert s.start(0.0) == []  # already started
    s.opened(0.0)
    s.message(0.0, begin())
    assert (
        s.connect_failed(0.0, Failure(ConnectFailure.NETWORK, "refused")) == []
    )  # connected: not a failure
    assert s.opened(0.0) == []
    assert s.message(0.0, begin("again")) == []  # a second Begin changes nothing
    assert s.account.server_session_ids == ["s1"]


def test_turns_before_begin_are_ignored():
    s = make()
    s.audio(0.0, STREAM_RATE)
    s.start(0.0)
    s.opened(0.0)
    assert s.message(0.0, turn(0, [("1", 100, 200)])) == []
    assert s.confirmed == 0


def test_with_a_short_history_the_outage_is_spooled_before_the_buffer_overwrites_it():
    s = make(history_samples=2 * STREAM_RATE, history_margin_samples=STREAM_RATE // 2)
    s.audio(0.0, 0)
    streaming(s)
    s.closed(0.0, None)
    spooled = []
    t = 0.0
    while t < 6.0:
        t = round(t + 0.05, 6)
        available = int(t * STREAM_RATE)
        for a in s.audio(t, available):
            if isinstance(a, Spool):
                spooled.append(a)
            if isinstance(a, Connect):
                s.connect_failed(t, Failure(ConnectFailure.NETWORK, "down"))
        # Never more unconfirmed than the buffer still holds.
        assert available - s.confirmed <= 2 * STREAM_RATE
    assert spooled and spooled[0].start == 0


def test_the_account_counts_connections_reconnects_turns_and_odd_messages_exactly():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s, sid="a")
    run_realtime(s, 0.0, 1.0)
    s.message(1.0, turn(0, [("1", 100, 300)]))
    s.message(1.0, turn(1, [("2", 400, 600)], final=False))
    s.message(1.0, "{broken")
    s.message(1.0, '{"type": "Heartbeat"}')
    after = of(s.closed(1.0, None), ReconnectAfter)[0].delay
    assert of(s.tick(1.0 + after), Connect) == [Connect(2)]
    s.opened(1.5)
    s.message(1.5, begin("b"))
    s.message(1.6, turn(0, [("2", 0, 200)]))
    acc = s.account
    assert (acc.connections, acc.reconnects, acc.turns) == (2, 1, 2)
    assert acc.server_session_ids == ["a", "b"]
    assert (s.garbled_messages, s.ignored_messages) == (1, 1)


# --------------------------------------------------------------------------- pinned by mutation

REFUSED = Failure(ConnectFailure.NETWORK, "refused")


def reconnect(s: StreamingSession, now: float, sid: str = "s2") -> list:
    """Let the planned reconnect happen at ``now`` (or when due), then Begin on it."""
    due = s.next_timer()
    assert due is not None
    t = max(now, due)
    assert of(s.tick(t), Connect)
    s.opened(t)
    return s.message(t, begin(sid))


def test_limits_accept_their_boundaries():
    StreamingLimits(chunk_ms=100, max_lead_seconds=0.1)
    StreamingLimits(max_lag_seconds=0.0)
    StreamingLimits(history_margin_samples=0)


def test_the_account_speaks_seconds():
    acc = SessionAccount(captured_samples=STREAM_RATE, delivered_samples=STREAM_RATE)
    assert acc.seconds(STREAM_RATE // 2) == 0.5
    assert acc.summary().startswith("captured 1.000 s = streamed 1.000 s + spooled 0.000 s")


def test_a_spool_failure_of_nothing_changes_nothing():
    acc = SessionAccount(spooled_samples=100)
    acc.spool_failed(0)
    acc.spool_failed(-5)
    assert (acc.spooled_samples, acc.lost_samples) == (100, 0)
    acc.spool_failed(500)
    assert (acc.spooled_samples, acc.lost_samples) == (0, 100)


def test_lost_ranges_merge_when_they_touch_or_overlap_and_stay_apart_otherwise():
    lost = _Intervals()
    lost.add(5, 5)
    assert lost.items == []
    lost.add(5, 10)
    lost.add(0, 5)  # touching from the left
    assert lost.items == [(0, 10)]
    lost.add(10, 12)  # touching from the right
    lost.add(14, 16)
    assert lost.items == [(0, 12), (14, 16)]
    lost.add(11, 15)
    assert lost.items == [(0, 16)]
    assert lost.overlap(4, 20) == 12


def test_the_session_uses_the_policy_it_is_given_or_one_drawn_from_its_rng():
    policy = ReconnectPolicy(StreamingLimits().reconnect, random.Random(1))
    assert StreamingSession(policy=policy).policy is policy
    delays = []
    for _ in range(2):
        s = StreamingSession(rng=random.Random(7))
        s.start(0.0)
        delays.append(of(s.connect_failed(0.0, REFUSED), ReconnectAfter)[0].delay)
    assert delays[0] == delays[1]


def test_a_new_session_wants_its_first_chunk_and_has_sent_nothing():
    s = make()
    assert s.audio_wanted() == 100 * MS
    assert (s.sent, s.confirmed) == (0, 0) and not s.stopping and not s.connected
    streaming(s)  # no audio reported at all
    assert s.audio_wanted() == 100 * MS
    s.stop(0.1, 0)
    assert s.stopping and s.audio_wanted() is None


def test_while_offline_the_session_wants_one_chunk_past_what_arrived():
    s = make()
    s.start(0.0)
    s.connect_failed(0.0, REFUSED)
    s.audio(0.1, 1000)
    assert s.audio_wanted() == 1000 + 100 * MS


def test_a_session_without_a_reconnect_resends_nothing():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    assert s.account.resent_samples == 0 and s.account.caught_up_samples == 0


def test_a_connection_that_sent_nothing_is_not_reconnected_quickly():
    s = make()
    streaming(s)
    s.closed(1.0, None)
    assert s.policy.backoff.attempt == 1


def test_a_resend_after_a_drop_is_counted_exactly():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    sent_before = s.sent
    s.message(2.0, turn(0, [("one", 100, 1000)]))  # confirms [0, 1 s)
    s.closed(2.0, None)
    frames = of(reconnect(s, 2.0) + run_realtime(s, 2.3, 3.0), SendAudio)
    assert frames[0].start == STREAM_RATE  # from the confirmed point
    resent = sum(max(0, min(f.end, sent_before) - f.start) for f in frames)
    assert resent > 0 and s.account.resent_samples == resent
    assert s.account.caught_up_samples > 0


def test_an_outage_from_the_start_says_once_how_long_it_has_lasted():
    s = make()
    s.start(0.0)
    t = 0.0
    notices: list[tuple[float, str]] = []
    failed_at = 1.0  # the first attempt times out after a second
    while t < 6.0:
        t = round(t + 0.1, 6)
        actions = s.audio(t, int(t * STREAM_RATE))
        if s.phase is Phase.CONNECTING and t >= failed_at:
            actions += s.connect_failed(t, REFUSED)
        if of(actions, Spool):
            assert isinstance(actions[0], Notice) or notices  # the notice comes first
        notices += [(t, n.message) for n in of(actions, Notice) if "offline for" in n.message]
    ((when, message),) = notices
    assert message.startswith(f"offline for {when:.1f} s")  # counted from the first Connect


def test_each_outage_says_so_once():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    said = 0
    t = 0.0
    for outage in range(2):
        s.closed(t, None)
        for _ in range(50):
            t = round(t + 0.1, 6)
            actions = s.audio(t, int(t * STREAM_RATE))
            if s.phase is Phase.CONNECTING:
                actions += s.connect_failed(t, REFUSED)
            said += sum("offline for" in n.message for n in of(actions, Notice))
        reconnect(s, t, sid=f"s{outage + 2}")
    assert said == 2


def test_a_rejected_frame_is_reported_with_its_size():
    s = make()
    streaming(s)
    (bug,) = [n for n in of(s.closed(0.1, 3007), Notice) if "this is a bug" in n.message]
    assert "last frame 0 samples + 0 padding (0 bytes, 0.0 ms)" in bug.message
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    (frame, *_) = of(run_realtime(s, 0.0, 0.2), SendAudio)
    (bug,) = [n for n in of(s.closed(0.3, 3006), Notice) if "this is a bug" in n.message]
    n = frame.end - frame.start
    assert f"last frame {n} samples + 0 padding ({2 * n} bytes, {n / 16:.1f} ms)" in bug.message


def test_a_message_whose_handler_fails_is_counted_as_garbled():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 0.5)
    absurd = json.dumps({"type": "Turn", "end_of_turn": False, "words": [{"start": 1e308}]})
    actions = s.message(0.5, absurd)
    assert of(actions, Notice) and s.garbled_messages == 1


def test_a_server_error_message_is_reported():
    s = make()
    streaming(s)
    error = json.dumps({"type": "Error", "error_code": 3005, "error": "bad"})
    assert of(s.message(0.1, error), Notice)[0].message == "server error 3005: bad"


def test_expiry_counts_the_connection_life_from_its_own_begin():
    s = make()
    s.start(100.0)
    s.opened(100.0)
    s.message(100.0, begin())
    assert not of(s.closed(100.5, 3008), Connect)  # 0.5 s old: backoff, no roll over


def test_expiry_before_begin_is_never_a_healthy_roll_over():
    s = make(healthy_after_seconds=0.5)
    s.start(0.0)
    s.opened(0.0)
    assert not of(s.closed(2.0, 3008), Connect)


def test_expiry_exactly_when_healthy_rolls_over_at_once():
    s = make()
    streaming(s)
    actions = s.closed(5.0, 3008)
    assert of(actions, ReconnectAfter)[0].delay == 0.0 and of(actions, Connect)


def test_a_second_stop_changes_nothing():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    end = s.sent
    s.stop(1.0, end)
    assert s.stop(1.1, 2 * STREAM_RATE) == []
    s.audio(1.15, 2 * STREAM_RATE)
    s.message(1.2, json.dumps({"type": "Termination", "audio_duration_seconds": 1}))
    assert finished(s, s.closed(1.3, 1000)).captured_samples == end


def test_terminate_is_sent_once():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    actions = s.stop(1.0, STREAM_RATE)
    assert of(actions, SendJson) == [SendJson({"type": "Terminate"})]
    assert not of(s.tick(1.5) + s.audio(1.6, 2 * STREAM_RATE), SendJson)


def test_a_connect_that_outlives_its_timeout_fails_exactly_at_the_deadline():
    s = make(connect_timeout_seconds=15.0)
    s.start(0.0)
    assert s.next_timer() == 15.0
    assert s.tick(14.999) == []
    (after,) = of(s.tick(15.0), ReconnectAfter)
    assert "connect timed out" in after.reason


def test_no_begin_closes_exactly_at_the_deadline():
    s = make(begin_timeout_seconds=10.0)
    s.start(0.0)
    s.opened(1.0)
    assert s.next_timer() == 11.0
    assert not of(s.tick(10.999), Close)
    assert of(s.tick(11.0), Close) == [Close(1000, "no Begin")]


def test_no_termination_closes_exactly_at_the_deadline():
    s = make(termination_timeout_seconds=5.0)
    streaming(s)
    s.stop(2.0, 0)  # nothing to send: Terminate at once
    assert s.next_timer() == 7.0
    assert not of(s.tick(6.999), Close)
    assert of(s.tick(7.0), Close) == [Close(1000, "no Termination")]


def test_word_times_after_a_reconnect_are_in_session_time():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.message(2.0, turn(0, [("one", 100, 1000)]))  # confirms [0, 1 s)
    s.closed(2.0, None)
    reconnect(s, 2.0)
    run_realtime(s, 2.3, 3.0)
    (emit,) = of(s.message(3.0, turn(0, [("two", 100, 300)])), EmitTurn)
    assert (emit.turn.words[0].start_ms, emit.turn.words[0].end_ms) == (1100, 1300)
    bare = json.dumps({"type": "Turn", "end_of_turn": False, "words": [{"text": "x", "end": 400}]})
    (emit,) = of(s.message(3.0, bare), EmitTurn)
    (word,) = emit.turn.words
    assert (word.start_ms, word.end_ms, word.confidence) == (1000, 1400, 0.0)
    assert not emit.turn.final and not emit.turn.formatted


def test_a_formatted_final_of_a_later_turn_releases_the_waiting_unformatted_one():
    s = make(format_turns=True)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    assert not of(s.message(1.0, turn(0, [("one", 100, 300)])), EmitTurn)
    actions = s.message(2.0, turn(1, [("two", 500, 700)], formatted=True, text="Two."))
    assert [e.turn.text for e in of(actions, EmitTurn)] == ["one", "Two."]
    assert [e.turn.order for e in of(actions, EmitTurn)] == [0, 1]


def test_a_termination_whose_duration_is_not_a_number_confirms_what_was_sent():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.stop(2.0, 2 * STREAM_RATE)
    actions = s.message(2.1, json.dumps({"type": "Termination", "audio_duration_seconds": True}))
    assert not of(actions, Notice)
    actions = s.closed(2.2, 1000)
    assert not of(actions, Spool) and finished(s, actions).streamed_samples == 2 * STREAM_RATE


def test_a_termination_exactly_covering_what_was_sent_says_nothing():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 3.0)
    s.stop(3.0, 3 * STREAM_RATE)
    # 2 whole seconds reported: the server may hold up to 3 s, exactly what was sent.
    actions = s.message(3.1, json.dumps({"type": "Termination", "audio_duration_seconds": 2}))
    assert not of(actions, Notice)


def test_a_short_termination_says_how_much_was_sent():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 4.0)
    s.stop(4.0, 4 * STREAM_RATE)
    actions = s.message(4.1, json.dumps({"type": "Termination", "audio_duration_seconds": 1}))
    (notice,) = of(actions, Notice)
    assert notice.message == "server reports 1 s of audio but 4.00 s were sent; rest kept"


def test_lost_samples_inside_a_spooled_range_are_counted_lost_not_spooled():
    s = make()
    s.start(0.0)
    s.connect_failed(0.0, REFUSED)
    s.audio(0.1, 2 * STREAM_RATE)
    s.lost(1000, 3000)
    acc = finished(s, s.stop(0.2, 2 * STREAM_RATE))
    assert (acc.spooled_samples, acc.lost_samples) == (2 * STREAM_RATE - 2000, 2000)
    assert acc.balanced


def test_a_backlog_exactly_the_live_window_is_streamed_not_spooled():
    s = make()  # window: 1 s of lead + 1 s of lag
    s.audio(0.0, 2 * STREAM_RATE)
    assert not of(streaming(s), Spool)
    s = make()
    s.audio(0.0, 2 * STREAM_RATE + 1)
    assert of(streaming(s), Spool)


def test_a_spooled_backlog_ends_at_the_quiet_point_inside_its_range():
    asked: list[tuple[int, int]] = []

    def quiet(low: int, high: int) -> int:
        asked.append((low, high))
        return low + 100

    limits = StreamingLimits()
    s = StreamingSession(limits, policy=ReconnectPolicy(limits.reconnect, random.Random(1)))
    s.quiet_point = quiet
    s.audio(0.0, 5 * STREAM_RATE)
    (spool,) = of(streaming(s), Spool)
    # The range may end anywhere from 2 s (keeps the window) to 4 s (keeps the lead) back.
    assert asked == [(3 * STREAM_RATE, 4 * STREAM_RATE)]
    assert spool == Spool(0, 3 * STREAM_RATE + 100)


def test_unconfirmed_audio_is_spooled_exactly_when_a_batch_nears_the_history_edge():
    s = make(
        history_samples=10 * STREAM_RATE, history_margin_samples=2 * STREAM_RATE, resume_guard_ms=0
    )
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    s.message(1.0, turn(0, [("one", 100, 500)]))  # confirms the first half second
    assert not of(run_realtime(s, 1.0, 9.4), Spool)
    edge = 9 * STREAM_RATE + STREAM_RATE // 2  # 8 s of safe history + 1 s batch past it
    assert not of(s.audio(9.45, edge - 1), Spool)
    assert of(s.audio(9.46, edge), Spool) == [Spool(STREAM_RATE // 2, 3 * STREAM_RATE // 2)]


def test_a_speech_started_without_a_numeric_timestamp_confirms_nothing():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 1.0)
    s.message(1.0, json.dumps({"type": "SpeechStarted", "timestamp": True}))
    s.message(1.0, json.dumps({"type": "Turn", "end_of_turn": False, "words": ["x"]}))
    s.message(1.0, json.dumps({"type": "Turn", "end_of_turn": False, "words": []}))
    assert s.garbled_messages == 0
    assert s.confirmed == 0


def test_a_draining_backlog_leaves_no_tail_shorter_than_a_legal_frame():
    s = make()
    s.start(0.0)
    s.opened(0.0)
    s.audio(0.0, STREAM_RATE + 400)  # one maximum frame and a 25 ms rest
    actions = s.stop(0.0, STREAM_RATE + 400) + s.message(0.0, begin())
    t = 0.0
    while not of(actions, SendJson) and t < 5:
        t = round(t + 0.01, 6)
        actions += s.tick(t)
    sizes = [f.end - f.start + f.pad for f in of(actions, SendAudio)]
    assert sizes == [STREAM_RATE + 400 - 50 * MS, 50 * MS]  # not 1 s and then 25 ms
    assert sum(f.end - f.start for f in of(actions, SendAudio)) == STREAM_RATE + 400


def test_a_lead_just_short_of_one_chunk_is_refused():
    with pytest.raises(ValueError, match="one chunk"):
        StreamingLimits(chunk_ms=100, max_lead_seconds=0.09995)


def test_a_rejected_padded_frame_is_reported_with_its_padding():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    s.stop(0.01, 20 * MS)  # one 20 ms frame padded to 50 ms
    (bug,) = [n for n in of(s.closed(0.1, 3007), Notice) if "this is a bug" in n.message]
    assert "last frame 320 samples + 480 padding (1600 bytes, 50.0 ms)" in bug.message


def test_a_short_termination_after_a_reconnect_counts_this_connection_only():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 2.0)
    s.message(2.0, turn(0, [("one", 100, 1000)]))  # confirms [0, 1 s)
    s.closed(2.0, None)
    reconnect(s, 2.0)
    run_realtime(s, 2.3, 4.0)
    s.stop(4.0, 4 * STREAM_RATE)
    sent_here = (s.sent - STREAM_RATE) / STREAM_RATE  # this connection began at 1 s
    actions = s.message(4.1, json.dumps({"type": "Termination", "audio_duration_seconds": 1}))
    (notice,) = of(actions, Notice)
    assert f"but {sent_here:.2f} s were sent" in notice.message


def test_the_offline_notice_counts_from_the_first_connect_not_the_clock_zero():
    s = make()
    s.start(10.0)
    s.connect_failed(10.0, REFUSED)
    t, said = 10.0, []
    while t < 16.0 and not said:
        t = round(t + 0.1, 6)
        actions = s.audio(t, int((t - 10.0) * STREAM_RATE))
        if s.phase is Phase.CONNECTING:
            actions += s.connect_failed(t, REFUSED)
        said = [n.message for n in of(actions, Notice) if "offline for" in n.message]
    assert said == [f"offline for {t - 10.0:.1f} s: keeping the audio for later transcription"]


def test_a_connection_that_only_resends_is_not_news():
    s = make(resume_guard_ms=0)
    s.audio(0.0, 0)
    streaming(s)
    run_realtime(s, 0.0, 6.0)
    s.message(6.0, turn(0, [("one", 100, 4000)]))  # confirms [0, 4 s)
    s.closed(6.0, 3008)  # healthy: rolled over at once, no reconnect rule used
    s.opened(6.0)
    s.message(6.0, begin("s2"))
    s.tick(7.0)  # resends [4 s, 6 s) within the pacer: no audio past what was sent before
    assert s.sent == 6 * STREAM_RATE
    s.closed(7.5, None)
    assert s.policy.backoff.attempt == 1  # a backoff step, not the quick reconnect


def test_a_pacer_limited_drain_never_leaves_a_short_tail():
    s = make()
    s.start(0.0)
    s.opened(0.0)
    end = STREAM_RATE + 2000  # the lead's worth, then 125 ms the pacer releases slowly
    s.audio(0.0, end)
    actions = s.stop(0.0, end) + s.message(0.0, begin())
    t = 0.0
    while not of(actions, SendJson) and t < 5:
        t = round(t + 0.01, 6)
        actions += s.tick(t)
    assert [f.end - f.start for f in of(actions, SendAudio)] == [STREAM_RATE, 2000]


def test_a_one_sample_session_is_sent_padded_and_terminated():
    s = make()
    s.audio(0.0, 0)
    streaming(s)
    actions = s.stop(0.01, 1)
    assert of(actions, SendAudio) == [SendAudio(0, 1, 50 * MS - 1)]
    assert of(actions, SendJson) == [SendJson({"type": "Terminate"})]


def test_a_backlog_of_exactly_two_chunks_is_caught_up():
    s = make()
    s.audio(0.0, 2 * 100 * MS)
    streaming(s)
    assert s.account.caught_up_samples == 2 * 100 * MS


def test_a_tail_rule_at_the_largest_frame_sends_it_whole():
    s = make(backlog_frame_ms=990)
    s.start(0.0)
    s.opened(0.0)
    s.audio(0.0, STREAM_RATE)
    actions = s.stop(0.0, STREAM_RATE) + s.message(0.0, begin())
    assert [f.end - f.start for f in of(actions, SendAudio)] == [STREAM_RATE]


def test_a_pacer_limited_backlog_goes_in_whole_chunks_while_still_streaming():
    s = make()
    s.start(0.0)
    s.opened(0.0)
    s.audio(0.0, STREAM_RATE + 2000)  # not stopping: a short rest is fine, more audio comes
    actions = s.message(0.0, begin())
    for t in (0.05, 0.1):
        actions += s.tick(t)
    assert [f.end - f.start for f in of(actions, SendAudio)] == [STREAM_RATE, 100 * MS]


def test_a_backlog_just_over_the_largest_frame_is_sent_largest_first_while_streaming():
    s = make()
    s.audio(0.0, STREAM_RATE + 400)
    frames = of(streaming(s), SendAudio)
    assert frames[0] == SendAudio(0, STREAM_RATE)  # the 25 ms rest waits for more audio
