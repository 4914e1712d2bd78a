"""Streaming v3 emulation: wrong clients get the real codes, right ones are served."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import numpy as np
import pytest
import websockets

from appliance import dtmf
from appliance.emulator import Emulator
from appliance.emulator.config import LOOSE_RATE_ALLOWANCE
from appliance.emulator.g711 import mulaw_encode
from tests.emulator.clients import expect_close, mint_streaming_token, stream_audio, streaming_url
from tests.fixtures.emulator import make_test_config

RATE = 16000


def chunk(ms: int, rate: int = RATE) -> bytes:
    return np.zeros(rate * ms // 1000, dtype="<i2").tobytes()


# --- token endpoint -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "params", "status", "error"),
    [
        ({}, {"expires_in_seconds": 60}, 401, "Authentication error, API token missing/invalid"),
        ("bearer", {"expires_in_seconds": 60}, 401, "Authentication error"),
        ("key", {}, 400, "expires_in_seconds is required"),
        ("key", {"expires_in_seconds": 0}, 400, "between 1 and 600"),
        ("key", {"expires_in_seconds": 601}, 400, "between 1 and 600"),
        ("key", {"expires_in_seconds": "x"}, 400, "integer"),
        ("key", {"expires_in_seconds": 60, "max_session_duration_seconds": 59}, 400, "60 and"),
        ("key", {"expires_in_seconds": 60, "max_session_duration_seconds": 10801}, 400, "10800"),
    ],
)
def test_token_endpoint_rejects_wrong_requests(emulator, headers, params, status, error):
    if headers == "key":
        headers = {"Authorization": emulator.api_key}
    elif headers == "bearer":
        headers = {"Authorization": f"Bearer {emulator.api_key}"}
    r = httpx.get(f"{emulator.http_url}/v3/token", params=params, headers=headers)
    assert r.status_code == status
    assert error in r.json()["error"]
    assert emulator.state.tokens_issued == 0


def test_token_endpoint_issues_a_token(emulator):
    params = {"expires_in_seconds": 600, "max_session_duration_seconds": 10800}
    r = httpx.get(
        f"{emulator.http_url}/v3/token", params=params, headers={"Authorization": emulator.api_key}
    )
    assert r.status_code == 200
    assert isinstance(r.json()["token"], str)
    assert emulator.state.tokens_issued == 1


# --- WebSocket authorisation -----------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "reason"),
    [
        (None, "missing authorization"),
        ("bearer", "no Bearer prefix"),
        ("wrong-key", "invalid API key or token"),
    ],
)
async def test_ws_rejects_bad_authorization_with_1008(emulator, auth, reason):
    headers = {}
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {emulator.api_key}"
    elif auth:
        headers["Authorization"] = auth
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        messages, code, why = await expect_close(ws)
    assert code == 1008
    assert reason in why
    assert messages == [{"type": "Error", "error_code": 1008, "error": why}]


async def test_raw_api_key_header_opens_a_session(emulator):
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        begin = json.loads(await ws.recv())
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, code, _ = await expect_close(ws)
    assert begin["type"] == "Begin"
    assert isinstance(begin["id"], str) and isinstance(begin["expires_at"], int)
    assert messages[-1]["type"] == "Termination" and code == 1000


@pytest.mark.parametrize("where", ["query", "header"])
async def test_token_is_single_use(emulator, where):
    token = mint_streaming_token(emulator)
    kwargs = {"additional_headers": {"Authorization": token}} if where == "header" else {}
    url = streaming_url(emulator, token=token) if where == "query" else streaming_url(emulator)
    async with websockets.connect(url, **kwargs) as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"
        async with websockets.connect(url, **kwargs) as ws2:
            _, code, reason = await expect_close(ws2)
    assert code == 1008 and "already been used" in reason
    assert emulator.state.token_reuse_attempts == 1
    assert list(emulator.state.sessions_per_token().values()) == [2]


async def test_expired_token_is_rejected(emulator):
    token = mint_streaming_token(emulator, expires_in=1)  # 50 ms at the test time scale
    await asyncio.sleep(0.2)
    async with websockets.connect(streaming_url(emulator, token=token)) as ws:
        _, code, reason = await expect_close(ws)
    assert code == 1008 and "expired" in reason


async def test_refused_and_force_expired_tokens_are_rejected(emulator):
    emulator.refuse_tokens(1)
    async with websockets.connect(
        streaming_url(emulator, token=mint_streaming_token(emulator))
    ) as ws:
        _, code, _ = await expect_close(ws)
    assert code == 1008
    token = mint_streaming_token(emulator)
    assert emulator.expire_tokens() == 1
    async with websockets.connect(streaming_url(emulator, token=token)) as ws:
        _, code, reason = await expect_close(ws)
    assert code == 1008 and "expired" in reason


async def test_agent_token_does_not_open_a_streaming_session(emulator):
    r = httpx.get(
        f"{emulator.http_url}/v1/token",
        params={"expires_in_seconds": 60},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
    )
    async with websockets.connect(streaming_url(emulator, token=r.json()["token"])) as ws:
        _, code, _ = await expect_close(ws)
    assert code == 1008


async def test_retired_v2_endpoint_answers_410(emulator):
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{emulator.ws_url}/v2/realtime/ws?sample_rate=16000"):
            pass
    assert info.value.response.status_code == 410


# --- query parameters ------------------------------------------------------------------

BAD_QUERIES = [
    ("encoding=pcm_s16le", "sample_rate is required"),
    ("sample_rate=abc", "sample_rate"),
    ("sample_rate=16000&encoding=opus", "encoding"),
    ("sample_rate=16000&speech_model=best", "speech_model"),
    ("sample_rate=16000&keyterms_prompt=a&keyterms_prompt=b", "more than once"),
    ("sample_rate=16000&keyterms_prompt=notjson", "keyterms_prompt"),
    ("sample_rate=16000&keyterms_prompt=%7B%7D", "keyterms_prompt"),
    ("sample_rate=16000&inactivity_timeout=4", "inactivity_timeout"),
    ("sample_rate=16000&inactivity_timeout=3601", "inactivity_timeout"),
    ("sample_rate=16000&format_turns=yes", "format_turns"),
    ("sample_rate=16000&min_turn_silence=900&max_turn_silence=100", "min_turn_silence"),
    ("sample_rate=16000&end_of_turn_confidence_threshold=2", "end_of_turn_confidence"),
    ("sample_rate=16000&domain=legal", "domain"),
    ("sample_rate=16000&sample_rate=8000", "more than once"),
    ("sample_rate=16000&colour=blue", "unknown parameter colour"),
]


@pytest.mark.parametrize(("query", "reason"), BAD_QUERIES)
async def test_invalid_query_parameters_close_3006(emulator, query, reason):
    url = f"{emulator.ws_url}/v3/ws?{query}"
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(url, additional_headers=headers) as ws:
        messages, code, why = await expect_close(ws)
    assert code == 3006
    assert reason in why
    assert messages[0]["error_code"] == 3006


async def test_every_documented_parameter_is_accepted(emulator):
    params = {
        "sample_rate": 16000,
        "encoding": "pcm_s16le",
        "speech_model": "u3-rt-pro",
        "format_turns": "True",
        "min_turn_silence": 160,
        "max_turn_silence": 1200,
        "end_of_turn_confidence_threshold": 0.4,
        "inactivity_timeout": 30,
        "keyterms_prompt": json.dumps(["AssemblyAI", "Pi"]),
        "prompt": "digits",
        "domain": "medical-v1",
        "language_detection": "false",
        "speaker_labels": "true",
    }
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(
        streaming_url(emulator, **params), additional_headers=headers
    ) as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"
        await ws.send(json.dumps({"type": "Terminate"}))
        _, code, _ = await expect_close(ws)
    assert code == 1000


# --- audio rules -----------------------------------------------------------------------


@pytest.mark.parametrize(("ms", "ok"), [(49, False), (50, True), (1000, True), (1001, False)])
async def test_chunk_duration_limits(emulator, ms, ok):
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(chunk(ms))
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, code, reason = await expect_close(ws)
    if ok:
        assert code == 1000
        assert emulator.state.chunk_size_violations == 0
    else:
        expected = f"Input duration violation: {ms} ms. Expected between 50 and 1000 ms"
        assert (code, reason) == (3007, expected)
        assert messages[0] == {"type": "Error", "error_code": 3007, "error": expected}
        assert emulator.state.chunk_size_violations == 1


async def test_audio_faster_than_real_time_is_rejected(emulator):
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        for _ in range(4):
            await ws.send(chunk(1000))
        _, code, reason = await expect_close(ws)
    assert code == 3007
    assert reason.startswith("Audio Transmission Rate Exceeded: Received 2.0 sec. audio in 0.")
    assert reason.endswith(" sec")
    assert emulator.state.rate_violations == 1
    [violation] = emulator.state.violations_of("pacing")
    assert violation.kind == "streaming" and violation.detail == reason
    assert violation.session == emulator.state.streaming_sessions()[-1].id
    assert violation.data["received_s"] == 2.0


async def test_one_maximum_size_frame_of_lead_then_real_time_is_accepted(emulator):
    headers = {"Authorization": emulator.api_key}
    audio = np.zeros(RATE * 2, dtype=np.int16)
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(chunk(1000))  # a full second ahead at once, then real time
        await asyncio.sleep(0.15)
        await stream_audio(ws, audio, RATE, chunk_ms=100)
        await asyncio.sleep(0.1)
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, code, _ = await expect_close(ws)
    assert code == 1000 and messages[-1]["audio_duration_seconds"] == 3
    assert emulator.state.violation_counts()["pacing"] == 0


async def test_catching_up_a_backlog_faster_than_real_time_is_rejected(emulator):
    """500 ms frames at 1.25x lead by more than 1 s with the 7th frame, at 2.4 s."""
    headers = {"Authorization": emulator.api_key}
    audio = np.zeros(RATE * 6, dtype=np.int16)
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        with contextlib.suppress(websockets.ConnectionClosed):
            await stream_audio(ws, audio, RATE, chunk_ms=500, speed=1.25)
        _, code, reason = await expect_close(ws)
    assert code == 3007
    assert reason.startswith("Audio Transmission Rate Exceeded: Received 3.5 sec. audio in 2.")
    [violation] = emulator.state.violations_of("pacing", kind="streaming")
    assert 2.2 <= violation.data["elapsed_s"] <= 2.8
    assert violation.data["received_s"] > violation.data["elapsed_s"] + 1.0


async def test_pacing_counts_from_begin_not_from_the_upgrade(emulator):
    emulator.delay_messages(0.6, count=1)  # Begin goes out 0.6 s after the upgrade
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"
        await ws.send(chunk(1000))
        await asyncio.sleep(0.2)
        await ws.send(chunk(500))  # 1.5 s in 0.2 s since Begin (0.8 s since the upgrade)
        _, code, reason = await expect_close(ws)
    assert code == 3007 and "Received 1.5 sec. audio in 0.2 sec" in reason


async def test_the_loose_allowance_lets_a_backlog_catch_up(tmp_path):
    config = make_test_config(tmp_path, rate_allowance=LOOSE_RATE_ALLOWANCE)
    audio = np.zeros(RATE * 3, dtype=np.int16)
    async with Emulator(config) as emu:
        headers = {"Authorization": emu.api_key}
        async with websockets.connect(streaming_url(emu), additional_headers=headers) as ws:
            await ws.recv()
            await ws.send(chunk(500))
            await stream_audio(ws, audio, RATE, chunk_ms=200, speed=1.4)
            await ws.send(json.dumps({"type": "Terminate"}))
            messages, code, _ = await expect_close(ws)
        assert code == 1000
        assert messages[-1]["audio_duration_seconds"] == 3
        assert emu.state.rate_violations == 0


async def test_odd_byte_count_is_rejected(emulator):
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(chunk(100) + b"\x00")
        _, code, _ = await expect_close(ws)
    assert code == 3006


# --- client messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "Invalid JSON"),
        (json.dumps({"type": "Dance"}), "Invalid message type: Dance"),
        (json.dumps(["Terminate"]), "Invalid message type"),
        (json.dumps({"type": "UpdateConfiguration", "colour": 1}), "colour"),
        (json.dumps({"type": "UpdateConfiguration", "min_turn_silence": "x"}), "min_turn_silence"),
    ],
)
async def test_invalid_client_messages_close_3006(emulator, text, reason):
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(text)
        messages, code, why = await expect_close(ws)
    assert code == 3006 and reason in why
    assert messages == [{"type": "Error", "error_code": 3006, "error": why}]


async def test_keepalive_and_update_configuration_are_accepted(emulator):
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "KeepAlive"}))
        await ws.send(
            json.dumps(
                {
                    "type": "UpdateConfiguration",
                    "keyterms_prompt": ["x"],
                    "min_turn_silence": 100,
                    "max_turn_silence": 1000,
                }
            )
        )
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, code, _ = await expect_close(ws)
    assert code == 1000 and messages[-1]["type"] == "Termination"


def assert_turn_types(turn: dict) -> None:
    assert turn["type"] == "Turn"
    assert type(turn["turn_order"]) is int
    assert type(turn["turn_is_formatted"]) is bool
    assert type(turn["end_of_turn"]) is bool
    assert type(turn["transcript"]) is str
    assert type(turn["end_of_turn_confidence"]) is float
    assert type(turn["utterance"]) is str
    for word in turn["words"]:
        assert type(word["text"]) is str
        assert type(word["start"]) is int and type(word["end"]) is int
        assert type(word["confidence"]) is float
        assert type(word["word_is_final"]) is bool


async def test_dtmf_streamed_at_real_time_comes_back_as_those_digits(emulator):
    audio = dtmf.generate("123 4#", RATE, lead_ms=100)
    token = mint_streaming_token(emulator)
    async with websockets.connect(streaming_url(emulator, token=token, format_turns="true")) as ws:
        assert json.loads(await ws.recv())["type"] == "Begin"
        await stream_audio(ws, audio, RATE, chunk_ms=100)
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, code, _ = await expect_close(ws)
    assert code == 1000
    turns = [m for m in messages if m["type"] == "Turn"]
    for turn in turns:
        assert_turn_types(turn)
    finals = [t for t in turns if t["end_of_turn"]]
    assert [(t["turn_order"], t["turn_is_formatted"], t["transcript"]) for t in finals] == [
        (0, False, "one two three"),
        (0, True, "One two three."),
        (1, False, "four pound"),
        (1, True, "Four pound."),
    ]
    starts = [w["start"] for t in finals[::2] for w in t["words"]]
    assert starts == pytest.approx([100, 300, 500, 1620, 1820], abs=25)
    for word in finals[0]["words"]:
        assert word["end"] - word["start"] == pytest.approx(120, abs=30)
    assert [m["type"] for m in messages].count("SpeechStarted") == 2
    termination = messages[-1]
    assert termination["type"] == "Termination"
    assert type(termination["audio_duration_seconds"]) is int
    assert type(termination["session_duration_seconds"]) is int
    record = emulator.state.streaming_sessions()[-1]
    received = record.audio()
    assert np.array_equal(received[: audio.size], audio)
    assert dtmf.decode_digits(received, RATE) == "1234#"
    assert record.wav_path is not None and record.wav_path.exists()


async def test_partials_grow_word_by_word_and_finals_are_sent_once_without_formatting(emulator):
    audio = dtmf.generate("567", RATE, lead_ms=100, trail_ms=600)
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        await stream_audio(ws, audio, RATE)
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, _, _ = await expect_close(ws)
    turns = [(m["transcript"], m["end_of_turn"]) for m in messages if m["type"] == "Turn"]
    assert turns == [
        ("five", False),
        ("five six", False),
        ("five six seven", False),
        ("five six seven", True),
    ]


async def test_force_endpoint_ends_the_turn_at_once(emulator):
    audio = dtmf.generate("9", RATE, lead_ms=100, trail_ms=100)
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        await stream_audio(ws, audio, RATE)
        await ws.send(json.dumps({"type": "ForceEndpoint"}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "Turn" and message["end_of_turn"]:
                break
        await ws.send(json.dumps({"type": "Terminate"}))
        await expect_close(ws)
    assert message["transcript"] == "nine"


async def test_mulaw_at_8khz(emulator):
    audio = dtmf.generate("80", 8000, lead_ms=100, trail_ms=500)
    audio = audio[: audio.size // 800 * 800]
    headers = {"Authorization": emulator.api_key}
    url = streaming_url(emulator, sample_rate=8000, encoding="pcm_mulaw")
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()
        for i in range(0, audio.size, 800):
            await ws.send(mulaw_encode(audio[i : i + 800]))
            await asyncio.sleep(0.1)
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, code, _ = await expect_close(ws)
    finals = [m["transcript"] for m in messages if m["type"] == "Turn" and m["end_of_turn"]]
    assert finals == ["eight zero"] and code == 1000


async def test_speech_and_noise_produce_no_turns(emulator):
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 2000, RATE).astype(np.int16)
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        await stream_audio(ws, noise, RATE, chunk_ms=250)
        await ws.send(json.dumps({"type": "Terminate"}))
        messages, _, _ = await expect_close(ws)
    assert [m["type"] for m in messages] == ["Termination"]


# --- session limits --------------------------------------------------------------------


async def test_session_expires_at_the_tokens_max_duration(tmp_path):
    config = make_test_config(tmp_path, time_scale=0.005)  # 60 s -> 0.3 s
    async with Emulator(config) as emu:
        async with httpx.AsyncClient() as client:
            r = await client.get(
                f"{emu.http_url}/v3/token",
                params={"expires_in_seconds": 60, "max_session_duration_seconds": 60},
                headers={"Authorization": emu.api_key},
            )
        token = r.json()["token"]
        async with websockets.connect(streaming_url(emu, token=token)) as ws:
            begin = json.loads(await ws.recv())
            messages, code, reason = await expect_close(ws)
    assert code == 3008 and "expired" in reason
    assert messages[0]["error_code"] == 3008
    assert isinstance(begin["expires_at"], int)


async def test_forced_session_expiry(emulator):
    headers = {"Authorization": emulator.api_key}
    async with websockets.connect(streaming_url(emulator), additional_headers=headers) as ws:
        await ws.recv()
        assert emulator.expire_sessions() == 1
        _, code, _ = await expect_close(ws)
    assert code == 3008


async def test_inactivity_timeout_terminates_an_idle_session(emulator):
    headers = {"Authorization": emulator.api_key}
    url = streaming_url(emulator, inactivity_timeout=5)  # 0.25 s at the test scale
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.recv()
        messages, code, _ = await expect_close(ws)
    assert messages[-1]["type"] == "Termination" and code == 1000


async def test_concurrency_limit_closes_3009(tmp_path):
    async with Emulator(make_test_config(tmp_path, max_concurrent_sessions=1)) as emu:
        headers = {"Authorization": emu.api_key}
        async with websockets.connect(streaming_url(emu), additional_headers=headers) as ws1:
            await ws1.recv()
            async with websockets.connect(streaming_url(emu), additional_headers=headers) as ws2:
                _, code, reason = await expect_close(ws2)
    assert code == 3009 and "concurrent" in reason.lower()
