"""Streaming v3 speaker labels and mid-session messages: UpdateConfiguration, ForceEndpoint."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from appliance import dtmf
from tests.emulator.clients import expect_close, stream_audio, streaming_url

RATE = 16000


async def run(emulator, digits: str, **params) -> list[dict]:
    """Stream ``digits`` (DTMF) in real time, Terminate; every Turn the server sent."""
    audio = dtmf.generate(digits, RATE, lead_ms=100, trail_ms=600)
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(
        streaming_url(emulator, **params), additional_headers=headers
    ) as ws:
        await ws.recv()
        await stream_audio(ws, audio, RATE)
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, code, _ = await expect_close(ws)
    assert code == 1000
    return [m for m in messages if m["type"] == "Turn"]


async def test_speaker_labels_alternate_between_digit_groups(emulator):
    turns = await run(emulator, "12 34 5", speaker_labels="true")
    finals = [(t["transcript"], t["speaker_label"]) for t in turns if t["end_of_turn"]]
    assert finals == [("one two", "A"), ("three four", "B"), ("five", "A")]
    assert all(t["speaker_label"] in ("A", "B") for t in turns)  # partials say it too


async def test_without_speaker_labels_no_turn_names_a_speaker(emulator):
    turns = await run(emulator, "12 3")
    assert turns and not any("speaker_label" in t for t in turns)


async def receive_final(ws, formatted: bool) -> dict:
    while True:
        message = json.loads(await ws.recv())
        if (
            message["type"] == "Turn"
            and message["end_of_turn"]
            and message["turn_is_formatted"] is formatted
        ):
            return message


async def test_updated_key_terms_spell_the_next_turn_on_the_same_connection(emulator):
    headers = {"Authorization": emulator.api_key}
    url = streaming_url(emulator, format_turns="true", keyterms_prompt=json.dumps(["ONE"]))
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()
        await stream_audio(ws, dtmf.generate("12", RATE, lead_ms=100, trail_ms=600), RATE)
        first = await receive_final(ws, formatted=True)
        update = {"type": "UpdateConfiguration", "keyterms_prompt": ["TWO"]}
        await ws.send(json.dumps(update))
        await stream_audio(ws, dtmf.generate("12", RATE, lead_ms=100, trail_ms=600), RATE)
        second = await receive_final(ws, formatted=True)
        await ws.send(json.dumps({"type": "Terminate"}))
        _, code, _ = await expect_close(ws)
    assert (first["transcript"], second["transcript"]) == ("ONE two.", "One TWO.")
    assert code == 1000
    assert len(emulator.state.streaming_sessions()) == 1


async def test_an_updated_turn_silence_ends_turns_sooner(emulator):
    """min_turn_silence=3000 keeps a 600 ms pause inside one turn until it is lowered."""
    headers = {"Authorization": emulator.api_key}
    url = streaming_url(emulator, min_turn_silence=3000, max_turn_silence=3000)
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "UpdateConfiguration", "min_turn_silence": 300}))
        await stream_audio(ws, dtmf.generate("1", RATE, lead_ms=100, trail_ms=600), RATE)
        ended = await asyncio.wait_for(receive_final(ws, formatted=False), 5)
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    assert ended["transcript"] == "one"


@pytest.mark.parametrize(
    ("update", "params", "reason"),
    [
        ({"prompt": "Transcribe Spanish"}, {}, "Invalid UpdateConfiguration field: prompt"),
        ({"format_turns": True}, {}, "Invalid UpdateConfiguration field: format_turns"),
        ({"max_turn_silence": 10_001}, {}, "must be between 0 and 10000"),
        ({"min_turn_silence": -1}, {}, "must be between 0 and 10000"),
        ({"min_turn_silence": 1.5}, {}, "expected an integer"),
        ({"min_turn_silence": 900}, {"max_turn_silence": 500}, "exceeds max_turn_silence"),
        ({"keyterms_prompt": "x"}, {}, "expected an array of strings"),
        ({"keyterms_prompt": ["x" * 51]}, {}, "at most 50 chars"),
        ({"keyterms_prompt": [f"t{i}" for i in range(101)]}, {}, "at most 100 terms"),
    ],
)
async def test_an_update_the_documentation_does_not_allow_closes_3006(
    emulator, update, params, reason
):
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(
        streaming_url(emulator, **params), additional_headers=headers
    ) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "UpdateConfiguration", **update}))
        messages, code, why = await expect_close(ws)
    assert code == 3006 and reason in why
    assert messages == [{"type": "Error", "error_code": 3006, "error": why}]


async def test_force_endpoint_closes_a_turn_a_long_silence_would_keep_open(emulator):
    headers = {"Authorization": emulator.api_key}
    url = streaming_url(emulator, min_turn_silence=5000, max_turn_silence=5000)
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()
        await stream_audio(ws, dtmf.generate("78", RATE, lead_ms=100, trail_ms=300), RATE)
        await ws.send(json.dumps({"type": "ForceEndpoint"}))
        ended = await asyncio.wait_for(receive_final(ws, formatted=False), 2)
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    assert ended["transcript"] == "seven eight" and ended["end_of_turn"] is True
