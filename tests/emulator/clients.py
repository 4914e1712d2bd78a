"""Small client helpers for emulator tests (plain websockets/httpx, as a client would)."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlencode

import httpx
import numpy as np
import websockets


def mint_streaming_token(emu, expires_in: int = 60, **extra) -> str:
    params = {"expires_in_seconds": expires_in, **extra}
    r = httpx.get(f"{emu.http_url}/v3/token", params=params, headers={"Authorization": emu.api_key})
    r.raise_for_status()
    return r.json()["token"]


def streaming_url(emu, **params) -> str:
    params.setdefault("sample_rate", 16000)
    return f"{emu.ws_url}/v3/ws?{urlencode(params)}"


async def expect_close(ws) -> tuple[list[dict], int, str]:
    """Read until the server closes; returns (messages, close code, reason)."""
    messages = []
    try:
        async for raw in ws:
            messages.append(json.loads(raw))
    except websockets.ConnectionClosed:
        pass
    return messages, ws.close_code, ws.close_reason


async def stream_audio(ws, audio: np.ndarray, rate: int, chunk_ms: int = 100, speed: float = 1.0):
    """Send int16 audio in chunks at ``speed`` x real time, padding the last chunk to 50 ms."""
    step = rate * chunk_ms // 1000
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n, i in enumerate(range(0, audio.size, step)):
        chunk = audio[i : i + step]
        if chunk.size < rate // 20:
            chunk = np.concatenate([chunk, np.zeros(rate // 20 - chunk.size, dtype=np.int16)])
        await ws.send(chunk.astype("<i2").tobytes())
        due = start + (n + 1) * chunk_ms / 1000 / speed
        await asyncio.sleep(max(0.0, due - loop.time()))
