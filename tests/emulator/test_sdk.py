"""The official SDK's streaming client, paced in real time, passes the strict emulator."""

from __future__ import annotations

import time

import numpy as np
import pytest

from appliance import dtmf

aai = pytest.importorskip("assemblyai.streaming.v3", reason="the bench extra installs the SDK")

RATE = 16000


def test_sdk_streaming_client_at_real_time(emulator):
    finals: list[str] = []
    errors: list[object] = []
    client = aai.StreamingClient(
        aai.StreamingClientOptions(api_key=emulator.api_key, api_host=emulator.ws_url)
    )
    client.on(
        aai.StreamingEvents.Turn,
        lambda _c, turn: finals.append(turn.transcript) if turn.end_of_turn else None,
    )
    client.on(aai.StreamingEvents.Error, lambda _c, error: errors.append(error))
    client.connect(aai.StreamingParameters(sample_rate=RATE))
    audio = dtmf.generate("42", RATE, lead_ms=100, trail_ms=600).astype("<i2")
    step = RATE // 10
    audio = np.concatenate([audio, np.zeros(-audio.size % step, dtype="<i2")])  # whole frames
    start = time.monotonic()
    for n, i in enumerate(range(0, audio.size, step)):
        client.stream(audio[i : i + step].tobytes())
        time.sleep(max(0.0, start + (n + 1) * 0.1 - time.monotonic()))
    client.disconnect(terminate=True)
    assert finals == ["four two"] and errors == []
    assert emulator.state.violations == []
