"""The voice-agent protocol core, event by event: no sockets, threads or sleeps."""

from __future__ import annotations

import base64
import json

import pytest

from appliance.protocol.agent import (
    AgentProtocol,
    AgentTranscript,
    CallTool,
    Close,
    Finished,
    FlushPlayback,
    Log,
    NewConversation,
    Play,
    Reconnect,
    ReplyDone,
    Send,
    SessionError,
    SessionReady,
    SpeakingChanged,
    UserTranscript,
    describe_error,
)

PCM = b"\x01\x00\x02\x00" * 600  # 1200 samples = 50 ms at 24 kHz


def msg(type_: str, **fields) -> str:
    return json.dumps({"type": type_, **fields})


def audio_msg(pcm: bytes = PCM, reply_id: str | None = "r1") -> str:
    fields = {"data": base64.b64encode(pcm).decode()}
    if reply_id is not None:
        fields["reply_id"] = reply_id
    return msg("reply.audio", **fields)


def sends(actions) -> list[dict]:
    return [a.message for a in actions if isinstance(a, Send)]


def of(kind, actions) -> list:
    return [a for a in actions if isinstance(a, kind)]


def make(**kwargs) -> AgentProtocol:
    return AgentProtocol({"system_prompt": "x"}, **kwargs)


def ready(proto: AgentProtocol, now: float = 0.0, session_id: str = "sess_1") -> None:
    proto.connection_opened(now)
    proto.receive(msg("session.ready", session_id=session_id), now)


# ------------------------------------------------------------ session setup


def test_session_update_is_the_first_message_on_connect():
    proto = make()
    actions = proto.connection_opened(0.0)
    assert sends(actions) == [{"type": "session.update", "session": {"system_prompt": "x"}}]


def test_no_input_audio_before_session_ready():
    proto = make()
    proto.connection_opened(0.0)
    assert proto.audio(PCM) == []
    assert not proto.ready
    actions = proto.receive(msg("session.ready", session_id="sess_1"), 0.1)
    assert of(SessionReady, actions) == [SessionReady("sess_1", resumed=False)]
    sent = sends(proto.audio(PCM))
    assert sent == [{"type": "input.audio", "audio": base64.b64encode(PCM).decode()}]


# ------------------------------------------------------------- reply audio


def test_reply_audio_data_field_is_played():
    proto = make()
    ready(proto)
    actions = proto.receive(audio_msg(), 1.0)
    assert of(Play, actions) == [Play(PCM, "r1")]
    assert of(SpeakingChanged, actions) == [SpeakingChanged(True)]


def test_reply_audio_in_an_audio_field_is_garbled_not_fatal():
    proto = make()
    ready(proto)
    bad = msg("reply.audio", audio=base64.b64encode(PCM).decode())
    actions = proto.receive(bad, 1.0)
    assert of(Play, actions) == []
    assert of(Log, actions)
    assert proto.stats.garbled_messages == 1


@pytest.mark.parametrize(
    "frame",
    ["{not json", "[1, 2]", '{"no_type": 1}', b"\xff\xfe", msg("reply.audio", data="@@@")],
)
def test_garbled_messages_are_logged_and_survived(frame):
    proto = make()
    ready(proto)
    actions = proto.receive(frame, 1.0)
    assert [type(a) for a in actions] == [Log]
    assert proto.stats.garbled_messages == 1
    assert of(Play, proto.receive(audio_msg(), 1.1))  # still working


def test_unknown_events_are_ignored_quietly():
    proto = make()
    ready(proto)
    assert proto.receive(msg("session.heartbeat", n=1), 1.0) == []
    assert proto.stats.unknown_messages == 1
    assert proto.ready


def test_transcripts_become_actions():
    proto = make()
    ready(proto)
    assert proto.receive(msg("transcript.user.delta", text="hel"), 1.0) == [
        UserTranscript("hel", final=False)
    ]
    assert proto.receive(msg("transcript.user", text="hello"), 1.1) == [
        UserTranscript("hello", final=True)
    ]
    agent = proto.receive(
        msg("transcript.agent", text="hi", reply_id="r1", item_id="i", interrupted=False), 1.2
    )
    assert agent == [AgentTranscript("hi", "r1", interrupted=False)]


# -------------------------------------------------------------- echo / mute


def test_half_duplex_sends_silence_of_the_same_length_while_the_agent_speaks():
    proto = make(echo="half_duplex")
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 1.0)
    proto.receive(audio_msg(), 1.0)
    assert proto.muted
    (sent,) = sends(proto.audio(PCM))
    assert base64.b64decode(sent["audio"]) == bytes(len(PCM))
    # reply.done alone does not unmute: the tail is still in the speaker.
    proto.receive(msg("reply.done", reply_id="r1", status="completed"), 1.5)
    assert proto.muted and proto.awaiting_drain
    assert proto.playback_drained(2.0) == [SpeakingChanged(False)]
    assert not proto.muted
    (sent,) = sends(proto.audio(PCM))
    assert base64.b64decode(sent["audio"]) == PCM


def test_full_duplex_streams_the_microphone_while_the_agent_speaks():
    proto = make(echo="full_duplex")
    ready(proto)
    proto.receive(audio_msg(), 1.0)
    assert proto.speaking and not proto.muted
    (sent,) = sends(proto.audio(PCM))
    assert base64.b64decode(sent["audio"]) == PCM


def test_interrupted_reply_flushes_the_speaker_and_drops_its_late_audio():
    proto = make(echo="full_duplex")
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 1.0)
    proto.receive(audio_msg(), 1.0)
    actions = proto.receive(msg("reply.done", reply_id="r1", status="interrupted"), 1.2)
    assert of(ReplyDone, actions) == [ReplyDone("r1", "interrupted")]
    assert of(FlushPlayback, actions) == [FlushPlayback("interrupted")]
    assert of(SpeakingChanged, actions) == [SpeakingChanged(False)]
    assert proto.receive(audio_msg(reply_id="r1"), 1.3) == []
    assert proto.receive(audio_msg(reply_id=None), 1.3) == []  # unlabelled stale audio too
    proto.receive(msg("reply.started", reply_id="r2"), 2.0)
    assert of(Play, proto.receive(audio_msg(reply_id="r2"), 2.0))


def test_button_interrupt_flushes_and_unmutes_at_once():
    proto = make(echo="half_duplex")
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 1.0)
    proto.receive(audio_msg(), 1.0)
    assert proto.muted
    actions = proto.interrupt(1.1)
    assert actions == [FlushPlayback("button"), SpeakingChanged(False)]
    assert not proto.muted
    assert proto.receive(audio_msg(), 1.2) == []  # rest of that reply is not played
    agent = proto.receive(msg("transcript.agent", text="long", reply_id="r1"), 1.3)
    assert agent == [AgentTranscript("long", "r1", interrupted=True)]
    assert proto.interrupt(1.4) == []  # nothing to interrupt


# -------------------------------------------------------------------- tools


def test_tool_result_waits_for_reply_done():
    proto = make()
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 1.0)
    actions = proto.receive(
        msg("tool.call", call_id="c1", name="lights", arguments={"on": True}), 1.0
    )
    assert actions == [CallTool("c1", "lights", {"on": True})]
    assert proto.tool_finished("c1", {"ok": True}, 1.1) == []
    done = proto.receive(msg("reply.done", reply_id="r1", status="completed"), 1.2)
    assert sends(done) == [{"type": "tool.result", "call_id": "c1", "result": '{"ok":true}'}]


def test_tool_result_after_reply_done_goes_out_at_once():
    proto = make()
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 1.0)
    proto.receive(msg("tool.call", call_id="c1", name="t", arguments={}), 1.0)
    proto.receive(msg("reply.done", reply_id="r1"), 1.1)
    (sent,) = sends(proto.tool_finished("c1", {"error": "boom"}, 1.5))
    assert sent["call_id"] == "c1"
    assert json.loads(sent["result"]) == {"error": "boom"}


def test_interrupted_reply_drops_pending_and_late_tool_results():
    proto = make()
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 1.0)
    proto.receive(msg("tool.call", call_id="c1", name="t", arguments={}), 1.0)
    proto.receive(msg("tool.call", call_id="c2", name="t", arguments={}), 1.0)
    proto.tool_finished("c1", {"v": 1}, 1.1)
    done = proto.receive(msg("reply.done", reply_id="r1", status="interrupted"), 1.2)
    assert sends(done) == []
    late = proto.tool_finished("c2", {"v": 2}, 1.3)
    assert sends(late) == []
    assert proto.stats.tool_results_dropped == 2
    assert proto.stats.tool_results_sent == 0


def test_tool_call_arguments_as_json_text_are_accepted():
    proto = make()
    ready(proto)
    actions = proto.receive(
        msg("tool.call", call_id="c1", name="t", arguments='{"city": "Oslo"}'), 1.0
    )
    assert actions == [CallTool("c1", "t", {"city": "Oslo"})]


# ------------------------------------------------------------ errors, end


def test_session_error_codes_map_to_clear_messages():
    proto = make()
    ready(proto)
    (err,) = proto.receive(msg("session.error", code="audio_rate_violation", message="x"), 1.0)
    assert err == SessionError(
        "audio_rate_violation", describe_error("audio_rate_violation", "x"), fatal=False
    )
    assert "faster than real time" in err.message
    assert proto.ready  # not fatal


def test_fatal_session_error_finishes_the_conversation():
    proto = make()
    ready(proto)
    actions = proto.receive(msg("session.error", code="invalid_config", message="bad"), 1.0)
    assert of(SessionError, actions)[0].fatal
    assert of(Finished, actions) == [Finished("error", proto.error)]
    assert of(Close, actions)
    assert proto.finished and "agent configuration was rejected" in proto.error


def test_one_refused_token_is_retried_three_in_a_row_are_fatal():
    proto = make()
    for attempt in range(3):
        proto.connection_opened(float(attempt))
        actions = proto.receive(msg("session.error", code="unauthorized", message="no"), attempt)
        assert of(SessionError, actions)[0].fatal == (attempt == 2)
        if attempt < 2:
            assert proto.connection_lost(attempt + 0.5) == [Reconnect(resume=False)]
    assert proto.finished and "rejected" in proto.error


def test_request_end_sends_session_end_and_waits_for_session_ended():
    proto = make()
    ready(proto)
    assert sends(proto.request_end(5.0)) == [{"type": "session.end"}]
    assert proto.audio(PCM) == []  # no audio after session.end
    assert proto.request_end(5.1) == []
    actions = proto.receive(msg("session.ended"), 5.2)
    assert of(Finished, actions) == [Finished("stopped")]
    assert of(Close, actions)


def test_end_wait_is_bounded():
    proto = make(end_timeout_seconds=2.0)
    ready(proto)
    proto.request_end(5.0)
    assert proto.tick(6.9) == []
    actions = proto.tick(7.0)
    assert of(Finished, actions) == [Finished("stopped")]
    assert of(Close, actions)


def test_idle_timeout_ends_with_session_end():
    proto = make(idle_timeout_seconds=10.0)
    ready(proto, now=0.0)
    assert proto.tick(9.0) == []
    proto.receive(msg("transcript.user", text="hi"), 9.0)  # activity
    assert proto.tick(18.0) == []
    assert sends(proto.tick(19.0)) == [{"type": "session.end"}]
    assert proto.receive(msg("session.ended"), 19.1)[0] == Finished("idle")


def test_no_idle_end_while_the_agent_speaks():
    proto = make(idle_timeout_seconds=10.0)
    ready(proto, now=0.0)
    proto.receive(audio_msg(), 1.0)
    assert proto.tick(30.0) == []


def test_maximum_length_ends_with_session_end():
    proto = make(max_conversation_seconds=60.0, idle_timeout_seconds=None)
    ready(proto, now=0.0)
    proto.receive(audio_msg(), 1.0)
    assert proto.tick(59.0) == []
    assert sends(proto.tick(60.0)) == [{"type": "session.end"}]


def test_next_deadline_is_when_the_idle_timeout_would_fire():
    proto = make(idle_timeout_seconds=10.0, max_conversation_seconds=None)
    assert proto.next_deadline() is None  # nothing timed before the session is ready
    ready(proto, now=0.0)
    proto.receive(msg("transcript.user", text="hi"), 9.0)
    assert proto.next_deadline() == 19.0
    assert proto.tick(proto.next_deadline())  # and tick acts on it


def test_next_deadline_leaves_out_the_idle_timeout_while_the_agent_speaks():
    proto = make(idle_timeout_seconds=10.0, max_conversation_seconds=60.0)
    ready(proto, now=0.0)
    proto.receive(audio_msg(), 1.0)
    assert proto.next_deadline() == 60.0


def test_next_deadline_while_ending_is_the_bound_on_waiting_for_session_ended():
    proto = make()
    ready(proto)
    proto.request_end(5.0)
    deadline = proto.next_deadline()
    assert deadline is not None and deadline > 5.0
    assert of(Finished, proto.tick(deadline))


def test_stop_while_disconnected_finishes_at_once():
    proto = make()
    assert proto.request_end(0.0) == [Finished("stopped")]


# -------------------------------------------------------------------- resume


def test_drop_within_window_resumes_the_same_session():
    proto = make(resume_window_seconds=30.0)
    ready(proto, session_id="sess_1")
    assert proto.connection_lost(10.0) == [Reconnect(resume=True)]
    assert proto.audio(PCM) == []
    actions = proto.connection_opened(11.0)
    assert sends(actions) == [{"type": "session.resume", "session_id": "sess_1"}]
    ready_actions = proto.receive(msg("session.ready", session_id="sess_1"), 11.2)
    assert of(SessionReady, ready_actions) == [SessionReady("sess_1", resumed=True)]
    assert proto.stats.resumes == 1


def test_failed_reconnects_keep_the_window_from_the_first_drop():
    proto = make(resume_window_seconds=30.0)
    ready(proto)
    assert proto.connection_lost(10.0) == [Reconnect(resume=True)]
    assert proto.connection_lost(25.0) == [Reconnect(resume=True)]  # connect failed
    actions = proto.connection_lost(40.5)
    assert of(NewConversation, actions) == [NewConversation("resume window passed")]
    assert of(Reconnect, actions) == [Reconnect(resume=False)]
    assert sends(proto.connection_opened(41.0))[0]["type"] == "session.update"


@pytest.mark.parametrize("code", ["session_not_found", "session_expired"])
def test_refused_resume_starts_a_new_conversation(code):
    proto = make()
    ready(proto, session_id="sess_1")
    proto.connection_lost(1.0)
    proto.connection_opened(1.5)
    actions = proto.receive(msg("session.error", code=code, message="gone"), 1.6)
    assert of(Close, actions)  # session.update needs a fresh connection
    lost = proto.connection_lost(1.7)
    assert of(NewConversation, lost) == [NewConversation("the session is gone")]
    opened = proto.connection_opened(2.0)
    assert sends(opened)[0]["type"] == "session.update"
    proto.receive(msg("session.ready", session_id="sess_2"), 2.1)
    assert proto.session_ids == ["sess_1", "sess_2"]


def test_results_of_completed_replies_are_sent_after_resume():
    proto = make()
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 1.0)
    proto.receive(msg("tool.call", call_id="c1", name="t", arguments={}), 1.0)
    proto.receive(msg("reply.done", reply_id="r1"), 1.1)
    proto.connection_lost(1.2)
    assert proto.tool_finished("c1", {"v": 1}, 1.3) == []  # no socket: held
    proto.connection_opened(2.0)
    actions = proto.receive(msg("session.ready", session_id="sess_1"), 2.1)
    assert [m["type"] for m in sends(actions)] == ["tool.result"]


def test_unreachable_service_gives_up():
    proto = make(give_up_seconds=60.0)
    proto.connection_lost(0.0, "connection refused")
    assert proto.connection_lost(59.0) == [Reconnect(resume=False)]
    actions = proto.connection_lost(61.0, "connection refused")
    assert of(Finished, actions)[0].reason == "error"
    assert "could not be reached" in proto.error


def test_drop_while_ending_finishes():
    proto = make()
    ready(proto)
    proto.request_end(1.0)
    assert proto.connection_lost(1.1) == [Finished("stopped")]


# ------------------------------------------------------------ pinned edges


def test_a_drop_mid_reply_keeps_its_tool_result_for_after_the_resume():
    proto = make()
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 0.1)
    proto.receive(audio_msg(reply_id="r1"), 0.1)
    assert proto.speaking
    proto.receive(msg("tool.call", call_id="c1", name="t", arguments={}), 0.2)
    (lost,) = proto.connection_lost(0.3, "dropped")
    assert lost == Reconnect(resume=True)
    # The reply never finishes on this socket: it is no longer open, and what was
    # queued still plays out before the microphone opens again.
    assert proto.awaiting_drain and proto.speaking
    assert proto.tool_finished("c1", {"ok": True}, 0.4) == []  # not connected: kept
    proto.connection_opened(0.5)
    actions = proto.receive(msg("session.ready", session_id="sess_1"), 0.6)
    assert sends(actions)[-1] == {"type": "tool.result", "call_id": "c1", "result": '{"ok":true}'}
    # ...and only once.
    assert sends(proto.receive(msg("reply.done", reply_id="r1"), 0.7)) == []


def test_session_ready_resets_the_refusal_count():
    proto = make()
    for _ in range(2):
        proto.connection_opened(0.0)
        proto.receive(msg("session.error", code="unauthorized", message="no"), 0.0)
        proto.connection_lost(0.0)
    ready(proto)
    proto.connection_lost(1.0)
    proto.connection_opened(1.1)
    actions = proto.receive(msg("session.error", code="unauthorized", message="no"), 1.1)
    (error,) = of(SessionError, actions)
    assert not error.fatal  # the count began again at session.ready


def test_refusals_in_a_row_become_fatal():
    proto = make()
    fatal = []
    for _ in range(3):
        proto.connection_opened(0.0)
        actions = proto.receive(msg("session.error", code="unauthorized", message="no"), 0.0)
        fatal += [e.fatal for e in of(SessionError, actions)]
        proto.connection_lost(0.0)
    assert fatal == [False, False, True]


def test_a_resume_answered_with_another_session_is_a_new_conversation_not_a_resume():
    proto = make()
    ready(proto, session_id="sess_1")
    proto.connection_lost(1.0)
    actions = proto.connection_opened(1.2)
    assert sends(actions) == [{"type": "session.resume", "session_id": "sess_1"}]
    actions = proto.receive(msg("session.ready", session_id="sess_2"), 1.3)
    assert of(SessionReady, actions) == [SessionReady("sess_2", resumed=False)]
    assert proto.stats.resumes == 0 and proto.session_ids == ["sess_1", "sess_2"]


def test_an_interrupted_replys_tool_result_is_never_sent_later_or_twice():
    proto = make()
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 0.1)
    proto.receive(msg("tool.call", call_id="c1", name="t", arguments={}), 0.2)
    proto.receive(msg("reply.done", reply_id="r1", status="interrupted"), 0.3)
    assert of(Log, proto.tool_finished("c1", "late", 0.4))
    proto.receive(msg("reply.started", reply_id="r2"), 0.5)
    assert sends(proto.receive(msg("reply.done", reply_id="r2"), 0.6)) == []
    assert proto.stats.tool_results_sent == 0 and proto.stats.tool_results_dropped == 1


def test_a_finished_replys_result_goes_once_when_the_tool_ends_after_it():
    proto = make()
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 0.1)
    proto.receive(msg("tool.call", call_id="c1", name="t", arguments={}), 0.2)
    proto.receive(msg("reply.done", reply_id="r1"), 0.3)
    first = sends(proto.tool_finished("c1", "x", 0.4))
    assert [m["call_id"] for m in first] == ["c1"]
    again = proto.tool_finished("c1", "x", 0.5)  # a second answer: never resent
    assert sends(again) == [] and of(Log, again)


def test_the_idle_timeout_counts_from_when_the_speaker_drained():
    proto = make(idle_timeout_seconds=5.0, max_conversation_seconds=None)
    ready(proto)
    proto.receive(msg("reply.started", reply_id="r1"), 1.0)
    proto.receive(audio_msg(reply_id="r1"), 1.0)
    proto.receive(msg("reply.done", reply_id="r1"), 2.0)
    assert proto.next_deadline() is None  # still speaking: no idle timer
    proto.playback_drained(4.0)
    assert proto.next_deadline() == 9.0
    assert not of(Send, proto.tick(8.9))
    assert {"type": "session.end"} in sends(proto.tick(9.0))


def test_every_counter_counts_exactly_what_happened():
    """The account the page and log show is built from these: each must be exact."""
    from dataclasses import asdict

    proto = make(echo="half_duplex")
    ready(proto)  # connection 1
    proto.audio(PCM)  # an audio chunk, not muted
    proto.receive(msg("transcript.user", text="one"), 0.1)
    proto.receive(msg("reply.started", reply_id="r1"), 0.2)
    proto.receive(audio_msg(reply_id="r1"), 0.2)  # played: speaking, so muted
    proto.audio(PCM)  # a muted chunk
    proto.receive(msg("tool.call", call_id="c1", name="t", arguments={}), 0.3)
    proto.receive(msg("reply.done", reply_id="r1"), 0.4)
    proto.tool_finished("c1", "ok", 0.5)  # sent
    proto.receive(msg("reply.started", reply_id="r2"), 0.6)
    proto.receive(msg("tool.call", call_id="c2", name="t", arguments={}), 0.6)
    proto.receive(msg("reply.done", reply_id="r2", status="interrupted"), 0.7)
    proto.receive(audio_msg(reply_id="r2"), 0.7)  # after the interruption: dropped
    proto.tool_finished("c2", "late", 0.8)  # dropped
    proto.receive("{broken", 0.9)
    proto.receive(msg("something.new"), 0.9)
    stats = asdict(proto.stats)
    assert stats == {
        "messages_received": 12,
        "garbled_messages": 1,
        "unknown_messages": 1,
        "audio_chunks_sent": 2,
        "muted_chunks_sent": 1,
        "reply_audio_bytes_played": len(PCM),
        "reply_audio_chunks_dropped": 1,
        "user_turns": 1,
        "agent_replies": 2,
        "interrupted_replies": 1,
        "tool_calls": 2,
        "tool_results_sent": 1,
        "tool_results_dropped": 1,
        "connections": 1,
        "resumes": 0,
        "new_conversations": 0,
    }


def test_a_huge_session_error_is_logged_cut_short():
    proto = make()
    ready(proto)
    actions = proto.receive(msg("session.error", code="x" * 5000, message="y" * 1_000_000), 0.1)
    (error,) = of(SessionError, actions)
    assert len(error.code) < 100 and len(error.message) < 600
