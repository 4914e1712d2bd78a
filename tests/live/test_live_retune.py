"""End to end against the emulator: two speakers, a retune without reconnecting, a turn ended.

DTMF "speech" in a 48 kHz capture ring, the real runner, the emulator on
loopback. The retune and the turn end are made from a turn subscriber, on the
event loop, at the moment a turn arrives, so no test waits on a guessed time.
"""

from __future__ import annotations

import asyncio
import json

from appliance import dtmf
from appliance import events as ev
from appliance.audio.ring import RingBuffer
from appliance.live import LiveOptions, LiveTranscription, TranscriptWriter
from tests.events import collect

from .helpers import CAPTURE_RATE, Feeder, make_config, streaming_tokens


async def run_until_fed(live: LiveTranscription, feeder: Feeder) -> None:
    feeder.start()
    try:
        task = asyncio.create_task(live.run(0))
        while not feeder.done.is_set():
            await asyncio.sleep(0.05)
        live.request_stop()
        await asyncio.wait_for(task, 30)
    finally:
        feeder.halt.set()


async def test_two_speakers_and_a_key_term_update_on_one_connection(emulator, tmp_path):
    config = make_config(emulator, tmp_path, speaker_labels=True)
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    bus = ev.EventBus()
    seen = collect(bus, ev.TurnFinal)

    def retune_after_the_second_turn(session: LiveTranscription, turn) -> None:
        if turn.final and turn.order == 1:
            session.retune(keyterms_prompt=["TWO"])

    live = LiveTranscription(
        LiveOptions.from_config(config),
        ring,
        streaming_tokens(emulator, config),
        events=bus,
        subscribers=[TranscriptWriter(config.state_path), retune_after_the_second_turn],
    )
    audio = dtmf.generate("12 34 12", CAPTURE_RATE, lead_ms=300, trail_ms=1500, pause_ms=1500)
    await run_until_fed(live, Feeder(ring, audio))

    finals = [(t.text, t.speaker) for t in live.turns if t.final]
    assert finals == [("One two.", "A"), ("Three four.", "B"), ("One TWO.", "A")]
    assert [(e.text, e.speaker) for e in seen] == finals  # the typed event carries it
    lines = [json.loads(x) for x in live.transcript_path.read_text().splitlines()]
    assert [x["speaker"] for x in lines] == ["A", "B", "A"]
    [record] = emulator.state.streaming_sessions()  # one connection: no reconnect
    assert record.params["speaker_labels"] == "true"
    assert record.received("UpdateConfiguration") == [
        {"type": "UpdateConfiguration", "keyterms_prompt": ["TWO"]}
    ]
    assert live.machine.account.reconnects == 0 and live.machine.account.balanced


async def test_end_turn_closes_a_turn_a_long_turn_silence_would_keep_open(emulator, tmp_path):
    config = make_config(emulator, tmp_path, min_turn_silence=10_000, max_turn_silence=10_000)
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    ended = asyncio.Event()

    def end_when_both_words_are_heard(session: LiveTranscription, turn) -> None:
        if turn.final:
            ended.set()
        elif turn.text == "seven eight":
            session.end_turn()

    live = LiveTranscription(
        LiveOptions.from_config(config),
        ring,
        streaming_tokens(emulator, config),
        subscribers=[end_when_both_words_are_heard],
    )
    feeder = Feeder(ring, dtmf.generate("78", CAPTURE_RATE, lead_ms=300, trail_ms=300))
    feeder.start()
    task = asyncio.create_task(live.run(0))
    try:
        # Well inside the 10 s of silence the server would otherwise wait for.
        await asyncio.wait_for(ended.wait(), 5)
        assert [t.text for t in live.turns if t.final] == ["Seven eight."]
        live.request_stop()
        await asyncio.wait_for(task, 30)
    finally:
        feeder.halt.set()
        live.request_stop()
    [record] = emulator.state.streaming_sessions()
    assert record.received("ForceEndpoint") == [{"type": "ForceEndpoint"}]
