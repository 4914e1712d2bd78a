"""A live session's token is scrubbed until its connection is accepted, and no longer."""

from __future__ import annotations

import asyncio

from appliance import dtmf
from appliance import events as ev
from appliance.audio.ring import RingBuffer
from appliance.live import LiveTranscription
from appliance.secrets import Secret, redact

from .helpers import CAPTURE_RATE, Feeder, make_config, streaming_tokens


class Recording:
    """A token source that remembers what it handed out."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.handed: list[str] = []

    async def fetch(self) -> Secret:
        token = await self.source.fetch()  # type: ignore[attr-defined]
        self.handed.append(token.reveal())
        return token


async def test_a_used_token_leaves_redaction_and_an_unused_one_stays(emulator, spool, tmp_path):
    config = make_config(emulator, tmp_path)
    tokens = Recording(streaming_tokens(emulator, config))
    unused = (await tokens.fetch()).reveal()  # minted, never connected with
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    live = LiveTranscription.from_config(
        config, ring, tokens, spool, ev.EventBus(), config.state_path
    )
    feeder = Feeder(ring, dtmf.generate("1", CAPTURE_RATE, lead_ms=200, trail_ms=800))
    feeder.start()
    try:
        task = asyncio.create_task(live.run(0))
        while not feeder.done.is_set():
            await asyncio.sleep(0.05)
        live.request_stop()
        await asyncio.wait_for(task, 30)
    finally:
        feeder.halt.set()
    used = tokens.handed[1:]
    assert used, "the session connected with a token of its own"
    assert all(redact(f"x {value} y") == f"x {value} y" for value in used)
    assert redact(f"x {unused} y") == "x *** y"
