"""A voice-agent conversation against the strict emulator: a pre-roll backlog, a drop and
a resume, hostile frames and a reply longer than the speaker's buffer; no rule broken."""

from __future__ import annotations

import asyncio
import time

from appliance import dtmf
from appliance.agent import VoiceAgentConversation
from appliance.audio.playback import BufferFull
from appliance.connection.tokens import TokenCoordinator
from appliance.events import EventBus
from tests.agent.helpers import (
    CAPTURE_RATE,
    SimulatedSpeaker,
    agent_tokens,
    make_config,
    wait_for,
)
from tests.fixtures.emulator import TEST_TIME_SCALE

PREROLL_SECONDS = 3.0  # longer than the one frame of lead: it must be paced, not burst


class SmallSpeaker(SimulatedSpeaker):
    """A speaker whose buffer holds only ``seconds`` of audio (the real one raises too)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def write(self, pcm: bytes) -> None:
        if self._end - time.monotonic() > self.seconds:
            raise BufferFull(f"playback buffer over {self.seconds} s")
        super().write(pcm)


def conversation(emulator, ring, tmp_path, speaker, tokens=None, **agent) -> VoiceAgentConversation:
    config = make_config(emulator, tmp_path, **agent)
    return VoiceAgentConversation(
        config, ring, speaker, tokens or agent_tokens(emulator), EventBus(), config.state_path
    )


def rules_broken(emulator):
    return [v.as_dict() for v in emulator.state.violations]


async def test_preroll_drop_resume_and_hostile_frames_break_no_rule(emulator, ring, tmp_path):
    emulator.clear_violations()
    ring.feeder.say_digits("12")  # said before the press: in the pre-roll
    await asyncio.sleep(PREROLL_SECONDS)
    speaker = SimulatedSpeaker()
    source = agent_tokens(emulator)
    # The emulator's clock for tokens runs TEST_TIME_SCALE times faster: say so.
    tokens = TokenCoordinator(source, lifetime_seconds=source.lifetime_seconds * TEST_TIME_SCALE)
    tokens.start()
    # No greeting: in half duplex it would mute the pre-roll while it plays.
    conv = conversation(emulator, ring, tmp_path, speaker, tokens, greeting=None)
    start = ring.write_index - int(PREROLL_SECONDS * CAPTURE_RATE)
    task = asyncio.create_task(conv.run(start))
    heard = lambda: dtmf.decode_digits(speaker.heard(), SimulatedSpeaker.RATE)  # noqa: E731
    try:
        await wait_for(lambda: heard() == "12" and speaker.idle, 20, "the reply to 12")
        await wait_for(lambda: not conv.speaking, 5, "unmute")
        emulator.drop(kind="agent")
        resumed = lambda: conv.protocol.stats.resumes == 1 and conv.protocol.ready  # noqa: E731
        await wait_for(resumed, 15, "resume")
        await wait_for(lambda: not conv.speaking, 5, "unmute")
        emulator.garble(count=1, mode="deep_nesting", kind="agent")
        ring.feeder.say_digits("34")
        await wait_for(lambda: heard() == "1234", 15, "the reply after resuming")
    finally:
        conv.request_stop()
        account = await asyncio.wait_for(task, 15)
        await tokens.aclose()
    assert account.balanced and account.lost_samples == 0
    assert account.resumes == 1 and len(set(account.session_ids)) == 1
    assert account.garbled_messages == 1  # the hostile frame was dropped, nothing more
    assert rules_broken(emulator) == []
    assert emulator.state.counters["rate_violations"] == 0


async def test_a_reply_longer_than_the_speaker_buffer_loses_its_excess_not_the_conversation(
    emulator, ring, tmp_path
):
    emulator.set_agent_script(greeting_digits="1234567890")  # about 2 s of speech
    speaker = SmallSpeaker(seconds=0.1)  # the service sends replies 0.2 s ahead
    conv = conversation(emulator, ring, tmp_path, speaker)
    task = asyncio.create_task(conv.run(ring.write_index))
    try:
        await wait_for(lambda: conv.account.dropped_reply_seconds > 0, 15, "the overflow")
        await wait_for(lambda: conv.protocol.stats.agent_replies == 1, 15, "the greeting to end")
        await wait_for(lambda: speaker.idle and not conv.speaking, 15, "the speaker to drain")
        ring.feeder.say_digits("5")
        await wait_for(lambda: conv.protocol.stats.agent_replies == 2, 15, "a reply after it")
    finally:
        conv.request_stop()
        account = await asyncio.wait_for(task, 15)
    assert account.stop_reason != "error" and account.error is None
    assert 0 < account.dropped_reply_seconds < 2.5
