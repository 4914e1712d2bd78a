"""The voice-agent protocol core, event by event: no sockets, threads or sleeps."""

from __future__ import annotations

import base64
import dataclasses
import json
import random

import pytest

from appliance.protocol.agent import (
    ERROR_MESSAGES,
    AgentLimits,
    AgentProtocol,
    AgentTranscript,
    CallTool,
    Close,
    Finish,
    FlushPlayback,
    NewConversation,
    Notice,
    Phase,
    Play,
    ReplyDone,
    SendJson,
    SendText,
    SessionError,
    SessionReady,
    SpeakingChanged,
    UserTranscript,
    describe_error,
)
from appliance.protocol.failures import ConnectFailure, Failure
from appliance.protocol.policy import ReconnectLimits
from appliance.protocol.retry import RetryLimits
from appliance.protocol.vocabulary import Connect, ReconnectAfter

REFUSED = Failure(ConnectFailure.NETWORK, "connection refused")
PCM = b"\x01\x00\x02\x00" * 600  # 1200 samples = 50 ms at 24 kHz


def msg(type_: str, **fields) -> str:
    return json.dumps({"type": type_, **fields})


def audio_msg(pcm: bytes = PCM, reply_id: str | None = "r1") -> str:
    fields = {"data": base64.b64encode(pcm).decode()}
    if reply_id is not None:
        fields["reply_id"] = reply_id
    return msg("reply.audio", **fields)


def sends(actions) -> list[dict]:
    """The messages sent, as the server parses them (``input.audio`` comes pre-encoded)."""
    return [
        a.message if isinstance(a, SendJson) else json.loads(a.text)
        for a in actions
        if isinstance(a, SendJson | SendText)
    ]


def of(kind, actions) -> list:
    return [a for a in actions if isinstance(a, kind)]


def make(**kwargs) -> AgentProtocol:
    """A protocol; ``AgentLimits`` fields among ``kwargs`` go into its limits."""
    names = {f.name for f in dataclasses.fields(AgentLimits)}
    limits = AgentLimits(**{k: kwargs.pop(k) for k in list(kwargs) if k in names})
    return AgentProtocol({"system_prompt": "x"}, limits=limits, **kwargs)


def connected(proto: AgentProtocol, now: float) -> list:
    """Connect (the first time, or when the planned reconnect is due) and open the socket."""
    if proto.phase is Phase.DISCONNECTED:
        planned = proto.next_timer()
        actions = proto.start(now) or proto.tick(max(now, planned or now))
        assert of(Connect, actions), actions
    return proto.opened(now)


def planned(actions: list) -> ReconnectAfter:
    """The one reconnect these actions plan (and nothing sent or finished)."""
    (after,) = of(ReconnectAfter, actions)
    assert not of(Finish, actions) and not sends(actions)
    return after


def next_connect(proto: AgentProtocol) -> Connect:
    """The Connect that a tick gives once the planned reconnect is due (not before)."""
    due = proto.next_timer()
    assert due is not None
    assert not of(Connect, proto.tick(due - 0.001))
    (connect,) = of(Connect, proto.tick(due))
    return connect


def ready(proto: AgentProtocol, now: float = 0.0, session_id: str = "sess_1") -> None:
    connected(proto, now)
    proto.message(now, msg("session.ready", session_id=session_id))


# ------------------------------------------------------------ session setup


def test_session_update_is_the_first_message_on_connect():
    proto = make()
    actions = connected(proto, 0.0)
    assert sends(actions) == [{"type": "session.update", "session": {"system_prompt": "x"}}]


def test_no_input_audio_before_session_ready():
    proto = make()
    connected(proto, 0.0)
    assert proto.audio(PCM) == []
    assert not proto.ready
    actions = proto.message(0.1, msg("session.ready", session_id="sess_1"))
    assert of(SessionReady, actions) == [SessionReady("sess_1", resumed=False)]
    sent = sends(proto.audio(PCM))
    assert sent == [{"type": "input.audio", "audio": base64.b64encode(PCM).decode()}]


@pytest.mark.parametrize("size", [2, 3, 4, 2400, 4800])
def test_input_audio_text_is_the_json_of_its_message(size):
    """Built by concatenation, it must still parse as exactly one input.audio of the PCM."""
    proto = make()
    ready(proto)
    pcm = random.Random(size).randbytes(size)
    (action,) = proto.audio(pcm)
    assert isinstance(action, SendText)
    assert json.loads(action.text) == {
        "type": "input.audio",
        "audio": base64.b64encode(pcm).decode(),
    }


# ------------------------------------------------------------- reply audio


def test_reply_audio_data_field_is_played():
    proto = make()
    ready(proto)
    actions = proto.message(1.0, audio_msg())
    assert of(Play, actions) == [Play(PCM, "r1")]
    assert of(SpeakingChanged, actions) == [SpeakingChanged(True)]


def test_reply_audio_in_an_audio_field_is_garbled_not_fatal():
    proto = make()
    ready(proto)
    bad = msg("reply.audio", audio=base64.b64encode(PCM).decode())
    actions = proto.message(1.0, bad)
    assert of(Play, actions) == []
    assert of(Notice, actions)
    assert proto.stats.garbled_messages == 1


@pytest.mark.parametrize(
    "frame",
    ["{not json", "[1, 2]", '{"no_type": 1}', b"\xff\xfe", msg("reply.audio", data="@@@")],
)
def test_garbled_messages_are_logged_and_survived(frame):
    proto = make()
    ready(proto)
    actions = proto.message(1.0, frame)
    assert [type(a) for a in actions] == [Notice]
    assert proto.stats.garbled_messages == 1
    assert of(Play, proto.message(1.1, audio_msg()))  # still working


def test_unknown_events_are_ignored_quietly():
    proto = make()
    ready(proto)
    assert proto.message(1.0, msg("session.heartbeat", n=1)) == []
    assert proto.stats.unknown_messages == 1
    assert proto.ready


def test_transcripts_become_actions():
    proto = make()
    ready(proto)
    assert proto.message(1.0, msg("transcript.user.delta", text="hel")) == [
        UserTranscript("hel", final=False)
    ]
    assert proto.message(1.1, msg("transcript.user", text="hello")) == [
        UserTranscript("hello", final=True)
    ]
    agent = proto.message(
        1.2, msg("transcript.agent", text="hi", reply_id="r1", item_id="i", interrupted=False)
    )
    assert agent == [AgentTranscript("hi", "r1", interrupted=False)]


# -------------------------------------------------------------- echo / mute


def test_half_duplex_sends_silence_of_the_same_length_while_the_agent_speaks():
    proto = make(echo="half_duplex")
    ready(proto)
    proto.message(1.0, msg("reply.started", reply_id="r1"))
    proto.message(1.0, audio_msg())
    assert proto.muted
    (sent,) = sends(proto.audio(PCM))
    assert base64.b64decode(sent["audio"]) == bytes(len(PCM))
    # reply.done alone does not unmute: the tail is still in the speaker.
    proto.message(1.5, msg("reply.done", reply_id="r1", status="completed"))
    assert proto.muted and proto.awaiting_drain
    assert proto.playback_drained(2.0) == [SpeakingChanged(False)]
    assert not proto.muted
    (sent,) = sends(proto.audio(PCM))
    assert base64.b64decode(sent["audio"]) == PCM


def test_full_duplex_streams_the_microphone_while_the_agent_speaks():
    proto = make(echo="full_duplex")
    ready(proto)
    proto.message(1.0, audio_msg())
    assert proto.speaking and not proto.muted
    (sent,) = sends(proto.audio(PCM))
    assert base64.b64decode(sent["audio"]) == PCM


def test_interrupted_reply_flushes_the_speaker_and_drops_its_late_audio():
    proto = make(echo="full_duplex")
    ready(proto)
    proto.message(1.0, msg("reply.started", reply_id="r1"))
    proto.message(1.0, audio_msg())
    actions = proto.message(1.2, msg("reply.done", reply_id="r1", status="interrupted"))
    assert of(ReplyDone, actions) == [ReplyDone("r1", "interrupted")]
    assert of(FlushPlayback, actions) == [FlushPlayback("interrupted")]
    assert of(SpeakingChanged, actions) == [SpeakingChanged(False)]
    assert proto.message(1.3, audio_msg(reply_id="r1")) == []
    assert proto.message(1.3, audio_msg(reply_id=None)) == []  # unlabelled stale audio too
    proto.message(2.0, msg("reply.started", reply_id="r2"))
    assert of(Play, proto.message(2.0, audio_msg(reply_id="r2")))


def test_button_interrupt_flushes_and_unmutes_at_once():
    proto = make(echo="half_duplex")
    ready(proto)
    proto.message(1.0, msg("reply.started", reply_id="r1"))
    proto.message(1.0, audio_msg())
    assert proto.muted
    actions = proto.interrupt(1.1)
    assert actions == [FlushPlayback("button"), SpeakingChanged(False)]
    assert not proto.muted
    assert proto.message(1.2, audio_msg()) == []  # rest of that reply is not played
    agent = proto.message(1.3, msg("transcript.agent", text="long", reply_id="r1"))
    assert agent == [AgentTranscript("long", "r1", interrupted=True)]
    assert proto.interrupt(1.4) == []  # nothing to interrupt


# -------------------------------------------------------------------- tools


def test_tool_result_waits_for_reply_done():
    proto = make()
    ready(proto)
    proto.message(1.0, msg("reply.started", reply_id="r1"))
    actions = proto.message(
        1.0, msg("tool.call", call_id="c1", name="lights", arguments={"on": True})
    )
    assert actions == [CallTool("c1", "lights", {"on": True})]
    assert proto.tool_finished("c1", {"ok": True}, 1.1) == []
    done = proto.message(1.2, msg("reply.done", reply_id="r1", status="completed"))
    assert sends(done) == [{"type": "tool.result", "call_id": "c1", "result": '{"ok":true}'}]


def test_tool_result_after_reply_done_goes_out_at_once():
    proto = make()
    ready(proto)
    proto.message(1.0, msg("reply.started", reply_id="r1"))
    proto.message(1.0, msg("tool.call", call_id="c1", name="t", arguments={}))
    proto.message(1.1, msg("reply.done", reply_id="r1"))
    (sent,) = sends(proto.tool_finished("c1", {"error": "boom"}, 1.5))
    assert sent["call_id"] == "c1"
    assert json.loads(sent["result"]) == {"error": "boom"}


def test_interrupted_reply_drops_pending_and_late_tool_results():
    proto = make()
    ready(proto)
    proto.message(1.0, msg("reply.started", reply_id="r1"))
    proto.message(1.0, msg("tool.call", call_id="c1", name="t", arguments={}))
    proto.message(1.0, msg("tool.call", call_id="c2", name="t", arguments={}))
    proto.tool_finished("c1", {"v": 1}, 1.1)
    done = proto.message(1.2, msg("reply.done", reply_id="r1", status="interrupted"))
    assert sends(done) == []
    late = proto.tool_finished("c2", {"v": 2}, 1.3)
    assert sends(late) == []
    assert proto.stats.tool_results_dropped == 2
    assert proto.stats.tool_results_sent == 0


def test_tool_call_arguments_as_json_text_are_accepted():
    proto = make()
    ready(proto)
    actions = proto.message(
        1.0, msg("tool.call", call_id="c1", name="t", arguments='{"city": "Oslo"}')
    )
    assert actions == [CallTool("c1", "t", {"city": "Oslo"})]


# ------------------------------------------------------------ errors, end


def test_session_error_codes_map_to_clear_messages():
    proto = make()
    ready(proto)
    (err,) = proto.message(1.0, msg("session.error", code="audio_rate_violation", message="x"))
    assert err == SessionError(
        "audio_rate_violation", describe_error("audio_rate_violation", "x"), fatal=False
    )
    assert "faster than real time" in err.message
    assert proto.ready  # not fatal


def test_fatal_session_error_finishes_the_conversation():
    proto = make()
    ready(proto)
    actions = proto.message(1.0, msg("session.error", code="invalid_config", message="bad"))
    assert of(SessionError, actions)[0].fatal
    assert of(Finish, actions) == [Finish("error", proto.error)]
    assert of(Close, actions)
    assert proto.finished and "agent configuration was rejected" in proto.error


def test_one_refused_token_is_retried_three_in_a_row_are_fatal():
    proto = make()
    for attempt in range(3):
        connected(proto, float(attempt))
        actions = proto.message(attempt, msg("session.error", code="unauthorized", message="no"))
        assert of(SessionError, actions)[0].fatal == (attempt == 2)
        if attempt < 2:
            assert planned(proto.closed(attempt + 0.5, None))
            assert next_connect(proto) == Connect(attempt + 2, resume=False)
    assert proto.finished and "rejected" in proto.error


def test_request_end_sends_session_end_and_waits_for_session_ended():
    proto = make()
    ready(proto)
    assert sends(proto.stop(5.0)) == [{"type": "session.end"}]
    assert proto.audio(PCM) == []  # no audio after session.end
    assert proto.stop(5.1) == []
    actions = proto.message(5.2, msg("session.ended"))
    assert of(Finish, actions) == [Finish("stopped")]
    assert of(Close, actions)


def test_end_wait_is_bounded():
    proto = make(end_timeout_seconds=2.0)
    ready(proto)
    proto.stop(5.0)
    assert proto.tick(6.9) == []
    actions = proto.tick(7.0)
    assert of(Finish, actions) == [Finish("stopped")]
    assert of(Close, actions)


def test_idle_timeout_ends_with_session_end():
    proto = make(idle_timeout_seconds=10.0)
    ready(proto, now=0.0)
    assert proto.tick(9.0) == []
    proto.message(9.0, msg("transcript.user", text="hi"))  # activity
    assert proto.tick(18.0) == []
    assert sends(proto.tick(19.0)) == [{"type": "session.end"}]
    assert proto.message(19.1, msg("session.ended"))[0] == Finish("idle")


def test_no_idle_end_while_the_agent_speaks():
    proto = make(idle_timeout_seconds=10.0)
    ready(proto, now=0.0)
    proto.message(1.0, audio_msg())
    assert proto.tick(30.0) == []


def test_maximum_length_ends_with_session_end():
    proto = make(max_conversation_seconds=60.0, idle_timeout_seconds=None)
    ready(proto, now=0.0)
    proto.message(1.0, audio_msg())
    assert proto.tick(59.0) == []
    assert sends(proto.tick(60.0)) == [{"type": "session.end"}]


def test_next_deadline_is_when_the_idle_timeout_would_fire():
    proto = make(idle_timeout_seconds=10.0, max_conversation_seconds=None)
    assert proto.next_timer() is None  # nothing timed before the session is ready
    ready(proto, now=0.0)
    proto.message(9.0, msg("transcript.user", text="hi"))
    assert proto.next_timer() == 19.0
    assert proto.tick(proto.next_timer())  # and tick acts on it


def test_next_deadline_leaves_out_the_idle_timeout_while_the_agent_speaks():
    proto = make(idle_timeout_seconds=10.0, max_conversation_seconds=60.0)
    ready(proto, now=0.0)
    proto.message(1.0, audio_msg())
    assert proto.next_timer() == 60.0


def test_next_deadline_while_ending_is_the_bound_on_waiting_for_session_ended():
    proto = make()
    ready(proto)
    proto.stop(5.0)
    deadline = proto.next_timer()
    assert deadline is not None and deadline > 5.0
    assert of(Finish, proto.tick(deadline))


def test_stop_while_disconnected_finishes_at_once():
    proto = make()
    assert proto.stop(0.0) == [Finish("stopped")]


# -------------------------------------------------------------------- resume


def test_drop_within_window_resumes_the_same_session():
    proto = make(resume_window_seconds=30.0)
    ready(proto, session_id="sess_1")
    assert planned(proto.closed(10.0, None))
    assert proto.audio(PCM) == []
    assert next_connect(proto) == Connect(2, resume=True)
    actions = proto.opened(11.0)
    assert sends(actions) == [{"type": "session.resume", "session_id": "sess_1"}]
    ready_actions = proto.message(11.2, msg("session.ready", session_id="sess_1"))
    assert of(SessionReady, ready_actions) == [SessionReady("sess_1", resumed=True)]
    assert proto.stats.resumes == 1


def test_failed_reconnects_keep_the_window_from_the_first_drop():
    proto = make(resume_window_seconds=30.0)
    ready(proto)
    proto.closed(10.0, None)
    assert next_connect(proto).resume
    assert not of(NewConversation, proto.connect_failed(25.0, REFUSED))
    assert next_connect(proto).resume
    actions = proto.connect_failed(40.5, REFUSED)
    assert of(NewConversation, actions) == [NewConversation("resume window passed")]
    assert next_connect(proto) == Connect(4, resume=False)
    assert sends(proto.opened(41.0))[0]["type"] == "session.update"


@pytest.mark.parametrize("code", ["session_not_found", "session_expired"])
def test_refused_resume_starts_a_new_conversation(code):
    proto = make()
    ready(proto, session_id="sess_1")
    proto.closed(1.0, None)
    connected(proto, 1.5)
    actions = proto.message(1.6, msg("session.error", code=code, message="gone"))
    assert of(Close, actions)  # session.update needs a fresh connection
    lost = proto.closed(1.7, None)
    assert of(NewConversation, lost) == [NewConversation("the session is gone")]
    opened = connected(proto, 2.0)
    assert sends(opened)[0]["type"] == "session.update"
    proto.message(2.1, msg("session.ready", session_id="sess_2"))
    assert proto.session_ids == ["sess_1", "sess_2"]


def test_results_of_completed_replies_are_sent_after_resume():
    proto = make()
    ready(proto)
    proto.message(1.0, msg("reply.started", reply_id="r1"))
    proto.message(1.0, msg("tool.call", call_id="c1", name="t", arguments={}))
    proto.message(1.1, msg("reply.done", reply_id="r1"))
    proto.closed(1.2, None)
    assert proto.tool_finished("c1", {"v": 1}, 1.3) == []  # no socket: held
    connected(proto, 2.0)
    actions = proto.message(2.1, msg("session.ready", session_id="sess_1"))
    assert [m["type"] for m in sends(actions)] == ["tool.result"]


def test_unreachable_service_gives_up():
    proto = make(give_up_seconds=60.0)
    proto.start(0.0)
    assert planned(proto.connect_failed(0.0, REFUSED))
    next_connect(proto)
    assert planned(proto.connect_failed(59.0, REFUSED))
    next_connect(proto)
    actions = proto.connect_failed(61.0, REFUSED)
    assert of(Finish, actions)[0].reason == "error"
    assert "could not be reached" in proto.error and "refused" in proto.error
    assert proto.next_timer() is None


def test_drop_while_ending_finishes():
    proto = make()
    ready(proto)
    proto.stop(1.0)
    assert proto.closed(1.1, None) == [Finish("stopped")]


# ------------------------------------------------------------ pinned edges


def test_a_drop_mid_reply_keeps_its_tool_result_for_after_the_resume():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.1, audio_msg(reply_id="r1"))
    assert proto.speaking
    proto.message(0.2, msg("tool.call", call_id="c1", name="t", arguments={}))
    assert planned(proto.closed(0.3, None, "dropped"))
    assert next_connect(proto).resume
    # The reply never finishes on this socket: it is no longer open, and what was
    # queued still plays out before the microphone opens again.
    assert proto.awaiting_drain and proto.speaking
    assert proto.tool_finished("c1", {"ok": True}, 0.4) == []  # not connected: kept
    connected(proto, 0.5)
    actions = proto.message(0.6, msg("session.ready", session_id="sess_1"))
    assert sends(actions)[-1] == {"type": "tool.result", "call_id": "c1", "result": '{"ok":true}'}
    # ...and only once.
    assert sends(proto.message(0.7, msg("reply.done", reply_id="r1"))) == []


def test_session_ready_resets_the_refusal_count():
    proto = make()
    for _ in range(2):
        connected(proto, 0.0)
        proto.message(0.0, msg("session.error", code="unauthorized", message="no"))
        proto.closed(0.0, None)
    ready(proto)
    proto.closed(1.0, None)
    connected(proto, 1.1)
    actions = proto.message(1.1, msg("session.error", code="unauthorized", message="no"))
    (error,) = of(SessionError, actions)
    assert not error.fatal  # the count began again at session.ready


def test_refusals_in_a_row_become_fatal():
    proto = make()
    fatal = []
    for _ in range(3):
        connected(proto, 0.0)
        actions = proto.message(0.0, msg("session.error", code="unauthorized", message="no"))
        fatal += [e.fatal for e in of(SessionError, actions)]
        proto.closed(0.0, None)
    assert fatal == [False, False, True]


def test_a_resume_answered_with_another_session_is_a_new_conversation_not_a_resume():
    proto = make()
    ready(proto, session_id="sess_1")
    proto.closed(1.0, None)
    actions = connected(proto, 1.2)
    assert sends(actions) == [{"type": "session.resume", "session_id": "sess_1"}]
    actions = proto.message(1.3, msg("session.ready", session_id="sess_2"))
    assert of(SessionReady, actions) == [SessionReady("sess_2", resumed=False)]
    assert proto.stats.resumes == 0 and proto.session_ids == ["sess_1", "sess_2"]


def test_an_interrupted_replys_tool_result_is_never_sent_later_or_twice():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.2, msg("tool.call", call_id="c1", name="t", arguments={}))
    proto.message(0.3, msg("reply.done", reply_id="r1", status="interrupted"))
    assert of(Notice, proto.tool_finished("c1", "late", 0.4))
    proto.message(0.5, msg("reply.started", reply_id="r2"))
    assert sends(proto.message(0.6, msg("reply.done", reply_id="r2"))) == []
    assert proto.stats.tool_results_sent == 0 and proto.stats.tool_results_dropped == 1


def test_a_finished_replys_result_goes_once_when_the_tool_ends_after_it():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.2, msg("tool.call", call_id="c1", name="t", arguments={}))
    proto.message(0.3, msg("reply.done", reply_id="r1"))
    first = sends(proto.tool_finished("c1", "x", 0.4))
    assert [m["call_id"] for m in first] == ["c1"]
    again = proto.tool_finished("c1", "x", 0.5)  # a second answer: never resent
    assert sends(again) == [] and of(Notice, again)


def test_the_idle_timeout_counts_from_when_the_speaker_drained():
    proto = make(idle_timeout_seconds=5.0, max_conversation_seconds=None)
    ready(proto)
    proto.message(1.0, msg("reply.started", reply_id="r1"))
    proto.message(1.0, audio_msg(reply_id="r1"))
    proto.message(2.0, msg("reply.done", reply_id="r1"))
    assert proto.next_timer() is None  # still speaking: no idle timer
    proto.playback_drained(4.0)
    assert proto.next_timer() == 9.0
    assert not of(SendJson, proto.tick(8.9))
    assert {"type": "session.end"} in sends(proto.tick(9.0))


def test_every_counter_counts_exactly_what_happened():
    """The account the page and log show is built from these: each must be exact."""
    from dataclasses import asdict

    proto = make(echo="half_duplex")
    ready(proto)  # connection 1
    proto.audio(PCM)  # an audio chunk, not muted
    proto.message(0.1, msg("transcript.user", text="one"))
    proto.message(0.2, msg("reply.started", reply_id="r1"))
    proto.message(0.2, audio_msg(reply_id="r1"))  # played: speaking, so muted
    proto.audio(PCM)  # a muted chunk
    proto.message(0.3, msg("tool.call", call_id="c1", name="t", arguments={}))
    proto.message(0.4, msg("reply.done", reply_id="r1"))
    proto.tool_finished("c1", "ok", 0.5)  # sent
    proto.message(0.6, msg("reply.started", reply_id="r2"))
    proto.message(0.6, msg("tool.call", call_id="c2", name="t", arguments={}))
    proto.message(0.7, msg("reply.done", reply_id="r2", status="interrupted"))
    proto.message(0.7, audio_msg(reply_id="r2"))  # after the interruption: dropped
    proto.tool_finished("c2", "late", 0.8)  # dropped
    proto.message(0.9, "{broken")
    proto.message(0.9, msg("something.new"))
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
    actions = proto.message(0.1, msg("session.error", code="x" * 5000, message="y" * 1_000_000))
    (error,) = of(SessionError, actions)
    assert len(error.code) < 100 and len(error.message) < 600


# ------------------------------------------------- connecting, and again


def test_start_asks_for_one_connection():
    proto = make()
    assert proto.start(0.0) == [Connect(1, resume=False)]
    assert proto.start(0.1) == []
    assert proto.next_timer() is None  # the attempt's own timeouts are the runner's


def test_events_outside_their_phase_change_nothing():
    proto = make()
    assert proto.opened(0.0) == []  # no Connect asked for
    assert proto.connect_failed(0.0, REFUSED) == []
    assert proto.closed(0.0, None) == []
    ready(proto)
    assert proto.connect_failed(1.0, REFUSED) == []  # connected: not a failure
    assert proto.opened(1.0) == []
    assert proto.ready and proto.stats.connections == 1


def test_a_refused_credential_is_retried_once_with_a_fresh_token_then_ends():
    proto = make()
    proto.start(0.0)
    after = planned(proto.connect_failed(0.0, Failure(ConnectFailure.AUTH, "HTTP 401")))
    assert after.auth_failure and after.delay <= 0.3
    assert next_connect(proto) == Connect(2)
    actions = proto.connect_failed(0.5, Failure(ConnectFailure.AUTH, "HTTP 401"))
    assert of(Finish, actions) == [Finish("error", proto.error)]
    assert proto.error == "the voice agent credentials were refused (HTTP 401)"


def test_a_fatal_answer_ends_the_conversation():
    proto = make()
    proto.start(0.0)
    actions = proto.connect_failed(0.0, Failure(ConnectFailure.FATAL, "HTTP 404 on upgrade"))
    assert of(Finish, actions) == [Finish("error", proto.error)]
    assert proto.error == "the voice agent cannot be reached (HTTP 404 on upgrade)"
    assert proto.next_timer() is None


def test_retry_after_is_honoured_when_connecting():
    proto = make()
    proto.start(0.0)
    failure = Failure(ConnectFailure.RATE_LIMITED, "HTTP 429", retry_after=7.0)
    assert planned(proto.connect_failed(0.0, failure)).delay >= 7.0
    assert proto.next_timer() >= 7.0


def test_a_drop_after_fresh_audio_reconnects_quickly_but_only_once():
    proto = make()
    ready(proto)
    proto.audio(PCM)
    assert planned(proto.closed(1.0, None)).delay <= 0.3
    assert proto.policy.backoff.attempt == 0  # the quick reconnect is not a backoff step
    next_connect(proto)
    proto.opened(1.3)
    proto.message(1.3, msg("session.ready", session_id="sess_1"))
    proto.audio(PCM)
    proto.closed(2.5, None)  # dropped again before it was healthy: backoff now
    assert proto.policy.backoff.attempt == 1


def test_a_drop_without_fresh_audio_backs_off():
    proto = make()
    ready(proto)
    proto.closed(1.0, None)
    assert proto.policy.backoff.attempt == 1


def test_a_connection_that_lasts_resets_the_backoff():
    proto = make()
    proto.start(0.0)
    proto.connect_failed(0.0, REFUSED)
    next_connect(proto)
    proto.connect_failed(1.0, REFUSED)
    assert proto.policy.backoff.attempt == 2
    ready(proto, 3.0)
    proto.tick(7.9)
    assert proto.policy.backoff.attempt == 2  # not healthy yet
    proto.tick(8.0)
    assert proto.policy.backoff.attempt == 0


def test_session_ready_tells_the_policy_the_credentials_work():
    proto = make()
    proto.start(0.0)
    proto.connect_failed(0.0, Failure(ConnectFailure.AUTH, "HTTP 401"))
    assert proto.policy.refusals == 1
    ready(proto, 1.0)
    assert proto.policy.refusals == 0


def test_stop_while_waiting_to_reconnect_ends_at_once():
    proto = make()
    ready(proto)
    proto.closed(1.0, None)
    assert proto.stop(1.1) == [Finish("stopped")]
    assert proto.next_timer() is None
    assert proto.tick(100.0) == []


def test_stop_while_connecting_ends_and_a_late_socket_is_closed():
    proto = make()
    proto.start(0.0)
    assert proto.stop(0.1) == [Finish("stopped")]
    assert proto.opened(0.2) == [Close(reason="conversation finished")]
    assert proto.stats.connections == 0


def test_a_close_reason_reaches_the_log_cut_short():
    proto = make()
    ready(proto)
    actions = proto.closed(1.0, 3005, "x" * 5000)
    (notice,) = of(Notice, actions)
    assert "closed 3005" in notice.message and len(notice.message) < 400
    assert planned(actions).reason.startswith("closed 3005 (xxx")


# ------------------------------------------------- pinned by the mutation run


class FirstOfRange(random.Random):
    """A 'random' source that always draws the low end: every delay is the floor."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_an_error_sentence_never_repeats_the_meaning():
    meaning = ERROR_MESSAGES["invalid_config"]
    assert describe_error("invalid_config") == meaning
    assert describe_error("invalid_config", meaning) == meaning
    assert describe_error("invalid_config", "bad voice") == f"{meaning} (bad voice)"


def test_a_new_conversation_is_quiet_and_has_no_timers():
    proto = make()
    assert not (proto.ready or proto.finished or proto.speaking or proto.muted)
    assert not proto.awaiting_drain
    assert proto.tick(5.0) == [] and proto.next_timer() is None


def test_start_after_a_drop_does_nothing():
    proto = make()
    ready(proto)
    proto.closed(1.0, None)
    assert proto.start(1.1) == []


def test_an_error_on_a_fresh_session_is_not_taken_for_a_refused_resume():
    proto = make()
    connected(proto, 0.0)  # session.update, not session.resume
    actions = proto.message(0.1, msg("session.error", code="session_not_found"))
    assert not of(Close, actions)


def test_a_refused_resume_closes_but_another_error_while_resuming_does_not():
    proto = make()
    ready(proto)
    proto.closed(1.0, None)
    assert next_connect(proto).resume
    proto.opened(1.5)
    assert not of(Close, proto.message(1.6, msg("session.error", code="at_capacity")))
    assert of(Close, proto.message(1.7, msg("session.error", code="session_expired")))


def test_the_drained_speaker_is_reported_once():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.1, audio_msg(reply_id="r1"))
    proto.message(0.2, msg("reply.done", reply_id="r1"))
    assert proto.awaiting_drain
    assert proto.playback_drained(0.5) == [SpeakingChanged(False)]
    assert not proto.awaiting_drain
    assert proto.playback_drained(0.6) == []


def test_a_button_interrupt_while_the_tail_plays_stops_waiting_for_the_drain():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.1, audio_msg(reply_id="r1"))
    proto.message(0.2, msg("reply.done", reply_id="r1"))
    assert of(FlushPlayback, proto.interrupt(0.3))
    assert not proto.awaiting_drain
    assert proto.message(0.4, audio_msg(reply_id=None)) == []  # stale, unlabelled
    assert proto.stats.reply_audio_chunks_dropped == 1


def test_a_new_reply_makes_unlabelled_audio_welcome_again():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.2, msg("reply.done", reply_id="r1", status="interrupted"))
    proto.message(0.3, msg("reply.started", reply_id="r2"))
    proto.message(0.4, msg("reply.done", reply_id="r2"))
    assert of(Play, proto.message(0.5, audio_msg(reply_id=None)))


def test_labelled_audio_of_an_interrupted_reply_is_dropped_during_the_next():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.2, msg("reply.done", reply_id="r1", status="interrupted"))
    proto.message(0.3, msg("reply.started", reply_id="r2"))
    assert proto.message(0.4, audio_msg(reply_id="r1")) == []
    assert of(Play, proto.message(0.5, audio_msg(reply_id="r2")))


def test_new_reply_audio_cancels_the_wait_for_the_drain():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.1, audio_msg(reply_id="r1"))
    proto.message(0.2, msg("reply.done", reply_id="r1"))
    proto.message(0.3, msg("reply.started", reply_id="r2"))
    proto.message(0.3, audio_msg(reply_id="r2"))
    assert not proto.awaiting_drain and proto.speaking


def test_an_interrupted_reply_cancels_the_wait_for_the_drain():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.1, audio_msg(reply_id="r1"))
    proto.message(0.2, msg("reply.done", reply_id="r1"))
    proto.message(0.3, msg("reply.started", reply_id="r2"))
    proto.message(0.4, msg("reply.done", reply_id="r2", status="interrupted"))
    assert not proto.awaiting_drain and not proto.speaking


def test_an_odd_byte_of_reply_audio_is_trimmed():
    proto = make()
    ready(proto)
    (play,) = of(Play, proto.message(0.1, audio_msg(b"\x01\x00\x02", reply_id="r1")))
    assert play.pcm == b"\x01\x00"


def test_unlabelled_replies_get_distinct_local_keys():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started"))
    assert of(Play, proto.message(0.1, audio_msg(reply_id=None)))[0].reply_id == "#local-1"
    assert proto.message(0.2, msg("reply.done")) == [ReplyDone("#local-1", "completed")]
    proto.message(0.3, msg("reply.started", reply_id=7))  # not text: no id at all
    assert proto.message(0.4, msg("reply.done"))[0] == ReplyDone("#local-2", "completed")


def test_tool_results_keep_their_text_unescaped():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("tool.call", call_id="c1", name="t", arguments={}))
    (result,) = sends(proto.tool_finished("c1", {"city": "Tromsø"}, 0.2))
    assert result["result"] == '{"city":"Tromsø"}'


def test_a_tool_call_whose_id_is_not_text_is_garbled():
    proto = make()
    ready(proto)
    assert of(Notice, proto.message(0.1, msg("tool.call", call_id=5, name="t")))
    assert proto.stats.tool_calls == 0 and proto.stats.garbled_messages == 1


def test_a_result_waits_for_its_own_reply_not_a_later_one():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.1, msg("tool.call", call_id="c1", name="t", arguments={}))
    proto.message(0.2, msg("reply.started", reply_id="r2"))  # r1's done never came
    assert proto.tool_finished("c1", {"v": 1}, 0.3) == []
    assert sends(proto.message(0.4, msg("reply.done", reply_id="r2"))) == []
    assert [m["call_id"] for m in sends(proto.message(0.5, msg("reply.done", reply_id="r1")))] == [
        "c1"
    ]


def test_a_result_held_while_not_ready_goes_with_the_next_reply_done():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("tool.call", call_id="c1", name="t", arguments={}))  # no reply open
    proto.stop(0.2)
    assert proto.tool_finished("c1", {"v": 1}, 0.3) == []  # ending: held
    done = proto.message(0.4, msg("reply.done", reply_id="r9"))
    assert [m["call_id"] for m in sends(done)] == ["c1"]


def test_the_maximum_length_counts_from_the_first_connection():
    proto = make(max_conversation_seconds=10.0, idle_timeout_seconds=None)
    ready(proto, 100.0)
    assert proto.tick(109.9) == []
    assert sends(proto.tick(110.0)) == [{"type": "session.end"}]


def test_a_drop_mid_reply_lets_the_idle_timeout_run_again():
    proto = make(idle_timeout_seconds=5.0, max_conversation_seconds=None)
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    assert proto.next_timer() is None  # the agent is busy: no idle end
    proto.closed(0.2, None)
    next_connect(proto)
    proto.opened(1.0)
    proto.message(1.0, msg("session.ready", session_id="sess_1"))
    assert proto.next_timer() == 6.0


def test_session_ready_without_an_id_is_garbled():
    proto = make()
    connected(proto, 0.0)
    assert of(Notice, proto.message(0.1, msg("session.ready", session_id="")))
    assert not proto.ready


def test_after_session_ready_two_refusals_are_still_not_fatal():
    proto = make()
    ready(proto)
    for t in (1.0, 2.0):
        proto.closed(t, None)
        next_connect(proto)
        proto.opened(t + 0.5)
        actions = proto.message(t + 0.5, msg("session.error", code="unauthorized"))
        assert not of(SessionError, actions)[0].fatal


def test_a_new_conversation_is_counted():
    proto = make(resume_window_seconds=1.0)
    ready(proto)
    proto.closed(1.0, None)
    proto.tick(proto.next_timer())
    proto.connect_failed(5.0, REFUSED)  # away longer than the window
    assert proto.stats.new_conversations == 1


def test_finishing_while_the_agent_speaks_unmutes_and_drops_held_results():
    proto = make()
    ready(proto)
    proto.message(0.1, msg("reply.started", reply_id="r1"))
    proto.message(0.1, audio_msg(reply_id="r1"))
    proto.message(0.1, msg("tool.call", call_id="c1", name="t", arguments={}))
    proto.tool_finished("c1", {"v": 1}, 0.2)  # held for r1's reply.done
    proto.message(0.3, msg("session.ended"))
    assert not proto.speaking and not proto.awaiting_drain
    assert proto.stats.tool_results_dropped == 1


def test_the_service_is_given_up_only_after_the_whole_bound():
    proto = make(give_up_seconds=60.0)
    proto.start(0.0)
    proto.connect_failed(0.0, REFUSED)
    next_connect(proto)
    assert planned(proto.connect_failed(60.0, REFUSED))  # exactly the bound: still trying


def test_a_resume_that_lands_exactly_at_the_window_resumes():
    limits = ReconnectLimits(retry=RetryLimits(floor_seconds=0.25))
    proto = make(resume_window_seconds=30.0, reconnect=limits, rng=FirstOfRange())
    ready(proto)
    proto.closed(0.0, None)  # no fresh audio: a backoff wait, drawn at its floor
    next_connect(proto)
    after = planned(proto.connect_failed(29.75, REFUSED))
    assert after.delay == 0.25
    assert next_connect(proto).resume  # 29.75 s away + 0.25 s = the window exactly


def test_after_a_refused_resume_the_next_connection_starts_afresh():
    proto = make()
    ready(proto, session_id="sess_1")
    proto.closed(1.0, None)
    assert next_connect(proto).resume
    proto.opened(1.5)
    proto.message(1.6, msg("session.error", code="session_not_found"))
    proto.closed(1.7, None)
    assert next_connect(proto) == Connect(3, resume=False)


def test_a_transcript_whose_text_is_not_text_is_garbled():
    proto = make()
    ready(proto)
    assert of(Notice, proto.message(0.1, msg("transcript.user", text=5)))
    assert proto.stats.user_turns == 0
