"""Half duplex unmutes when the speaker has stopped sounding, not when playback ran dry."""

from __future__ import annotations

import asyncio
import time

from appliance import events as ev
from appliance.agent import VoiceAgentConversation
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
