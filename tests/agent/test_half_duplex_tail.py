"""Half duplex unmutes when the speaker has stopped sounding, not when playback ran dry."""

from __future__ import annotations

import asyncio
import time

from appliance import dtmf
from appliance import events as ev
from appliance.agent import VoiceAgentConversation
from appliance.audio.own_sound import OwnSound
from tests.agent.helpers import SimulatedSpeaker, agent_tokens, make_config, wait_for

# The device sounds what it was handed this long after playback handed it over.
DEVICE_LATENCY = 0.4


class LatentSpeaker(SimulatedSpeaker):
    """A speaker with an output latency: quiet only once that and the tail have passed."""

    def __init__(self, latency: float) -> None:
        super().__init__()
        self.latency = latency
        self.tails: set[float] = set()

    def quiet(self, tail: float = 0.0) -> bool:
        self.tails.add(tail)
        return time.monotonic() >= self._end + self.latency + tail


async def test_the_microphone_stays_muted_until_the_reply_s_tail_has_left_the_speaker(
    emulator, ring, tmp_path
):
    emulator.set_agent_script(greeting_digits="0")
    config = make_config(emulator, tmp_path, echo="half_duplex")
    tail = config.audio.echo_tail_ms / 1000
    speaker = LatentSpeaker(DEVICE_LATENCY)
    conv = VoiceAgentConversation(
        config, ring, speaker, agent_tokens(emulator), ev.EventBus(), config.state_path
    )
    task = asyncio.create_task(conv.run(ring.write_index))
    try:
        await wait_for(lambda: conv.speaking, 10, "the greeting to start")
        await wait_for(lambda: speaker.idle, 10, "the greeting to be played out")
        played_out = speaker._end
        await wait_for(lambda: not conv.speaking, 5, "unmute")
        unmuted = time.monotonic()
    finally:
        conv.request_stop()
        await asyncio.wait_for(task, 10)
    assert unmuted >= played_out + DEVICE_LATENCY + tail
    assert unmuted < played_out + DEVICE_LATENCY + tail + 0.5
    assert speaker.tails == {tail}


class NotingSpeaker(SimulatedSpeaker):
    """A speaker that notes when its own sounds leave it, as AudioPlayback does."""

    def __init__(self, own: OwnSound, latency: float = 0.02) -> None:
        super().__init__()
        self.own = own
        self.latency = latency
        self.kept_out = 0

    def write_own_sound(self, pcm: bytes) -> None:
        start = max(time.monotonic(), self._end) + self.latency
        self.write(pcm)
        self.kept_out += 1
        self.own.left_speaker(start, start + len(pcm) / 2 / self.RATE)


async def test_the_preroll_sent_while_the_greeting_plays_is_kept_and_speech_over_it_is_not(
    emulator, ring, tmp_path
):
    emulator.set_agent_script(greeting_digits="1234567890")  # about 2 s of speech
    config = make_config(emulator, tmp_path, echo="half_duplex")
    own = OwnSound(config.audio.echo_tail_ms / 1000)
    ring.own_sound = own  # the speaker is linked to the microphone, as wiring does
    speaker = NotingSpeaker(own)
    ring.feeder.say_digits("47")  # said just before the press: the pre-roll
    await asyncio.to_thread(ring.feeder.spoken.wait, 5)
    start = ring.preroll_index(time.monotonic(), 1.5)
    conv = VoiceAgentConversation(
        config, ring, speaker, agent_tokens(emulator), ev.EventBus(), config.state_path
    )
    task = asyncio.create_task(conv.run(start))
    try:
        await wait_for(lambda: conv.speaking and not speaker.idle, 10, "the greeting")
        ring.feeder.say_digits("9")  # over the greeting: the agent must not hear it
        await asyncio.to_thread(ring.feeder.spoken.wait, 5)
        await wait_for(lambda: speaker.idle and not conv.speaking, 10, "the greeting's end")
        await asyncio.sleep(0.5)
    finally:
        conv.request_stop()
        account = await asyncio.wait_for(task, 10)
    (record,) = [s for s in emulator.state.sessions if s.kind == "agent"]
    # The pre-roll reached the agent whole; the 9 said while it spoke did not.
    assert dtmf.decode_digits(record.audio(), 24_000) == "47"
    assert speaker.kept_out and account.muted_samples > 0
