"""What the user said while a lost conversation could not hear it goes to the spool."""

from __future__ import annotations

import asyncio
import contextlib
import json

from appliance import dtmf
from appliance import events as ev
from appliance.agent import VoiceAgentConversation
from appliance.spool import store as st
from appliance.spool.uploader import Uploader
from tests.agent.helpers import SimulatedSpeaker, agent_tokens, make_config, wait_for
from tests.events import collect
from tests.live.helpers import real_spool, rest_client, until_transcribed


async def test_words_said_while_the_context_was_lost_are_spooled_and_transcribed(
    emulator, ring, tmp_path
):
    emulator.set_agent_script(greeting_digits="0")
    config = make_config(emulator, tmp_path)
    bus = ev.EventBus()
    seen = collect(bus, ev.Event)
    spool = real_spool(tmp_path, bus)
    speaker = SimulatedSpeaker()
    notices: list[str] = []
    conv = VoiceAgentConversation(
        config,
        ring,
        speaker,
        agent_tokens(emulator),
        bus,
        config.state_path,
        on_notice=notices.append,
        spool=spool,
    )
    try:
        async with rest_client(emulator) as client:
            uploader = Uploader(spool, client, config.upload, bus, retry_base=0.05, retry_cap=0.5)
            task = asyncio.create_task(conv.run(ring.write_index))
            heard = lambda: dtmf.decode_digits(speaker.heard(), SimulatedSpeaker.RATE)  # noqa: E731
            await wait_for(lambda: heard() == "0" and speaker.idle, 10, "greeting")
            # Down longer than the service's (scaled, 1.5 s) resume window; "47" is said
            # while no conversation can hear it.
            outage = asyncio.create_task(asyncio.to_thread(emulator.network_down, 2.5))
            await asyncio.sleep(0.3)
            ring.feeder.say_digits("47")
            await outage
            await wait_for(lambda: notices, 15, "the new-conversation notice")
            await wait_for(lambda: conv.protocol.ready, 10, "the new session")
            conv.request_stop()
            account = await asyncio.wait_for(task, 10)
            uploading = asyncio.create_task(uploader.run())
            try:
                await until_transcribed(spool, uploader, timeout=20)
            finally:
                uploading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await uploading
        assert account.balanced and account.skipped_ranges
        assert account.spooled_samples > 0 and account.skipped_samples == 0
        (row,) = spool.list()
        assert row.origin == "agent" and account.spool_recordings == [row.id]
        assert row.state == st.COMPLETED, (row.state, row.last_error)
        words = json.loads(spool.artifact_path(row.id, "json").read_text())["words"]
        assert "47" in "".join(dtmf_digits(w["text"]) for w in words)
        (ended,) = [e for e in seen if isinstance(e, ev.SessionPhase) and e.phase == "ended"]
        assert ended.account is not None and ended.account["spooled_samples"] > 0
    finally:
        spool.close()


def dtmf_digits(text: str) -> str:
    from appliance.emulator.recognizer import digits_of

    return "".join(digits_of(text))


async def test_without_a_spool_skipped_audio_is_only_counted(emulator, ring, tmp_path):
    emulator.set_agent_script(greeting_digits="0")
    config = make_config(emulator, tmp_path)
    speaker = SimulatedSpeaker()
    notices: list[str] = []
    conv = VoiceAgentConversation(
        config, ring, speaker, agent_tokens(emulator), ev.EventBus(), config.state_path,
        on_notice=notices.append,
    )  # fmt: skip
    task = asyncio.create_task(conv.run(ring.write_index))
    heard = lambda: dtmf.decode_digits(speaker.heard(), SimulatedSpeaker.RATE)  # noqa: E731
    await wait_for(lambda: heard() == "0" and speaker.idle, 10, "greeting")
    await asyncio.to_thread(emulator.network_down, 2.5)
    await wait_for(lambda: notices, 15, "the new-conversation notice")
    conv.request_stop()
    account = await asyncio.wait_for(task, 10)
    assert account.balanced and account.skipped_samples > 0 and account.spooled_samples == 0
