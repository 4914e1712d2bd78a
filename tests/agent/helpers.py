"""Shared pieces of the voice-agent tests: a paced microphone feeder, config, tokens."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from appliance import dtmf
from appliance.audio.ring import RingBuffer
from appliance.cloud.tokens import MintedTokens
from appliance.config import Config, ToolConfig
from appliance.secrets import Secret

CAPTURE_RATE = 48_000
BLOCK = 960  # 20 ms at 48 kHz


class Feeder(threading.Thread):
    """Writes audio into the ring at real-time pace, like a microphone; silence in between.

    ``say(samples)`` queues "speech"; ``spoken`` is set when it has all been written.
    """

    def __init__(self, ring: RingBuffer) -> None:
        super().__init__(daemon=True)
        self.ring = ring
        self.halt = threading.Event()
        self._queue: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._current = np.zeros(0, dtype=np.int16)
        self.spoken = threading.Event()
        self.spoken.set()

    def say(self, samples: np.ndarray) -> None:
        with self._lock:
            self.spoken.clear()
            self._queue.append(samples.astype(np.int16))

    def say_digits(self, digits: str) -> float:
        """Queue DTMF digits; returns their duration in seconds."""
        audio = dtmf.generate(digits, CAPTURE_RATE, lead_ms=50, trail_ms=50)
        self.say(audio)
        return len(audio) / CAPTURE_RATE

    def run(self) -> None:
        t0 = time.monotonic()
        index = 0
        silence = np.zeros(BLOCK, dtype=np.int16)
        while not self.halt.is_set():
            block = self._next_block(silence)
            due = t0 + index / CAPTURE_RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.ring.write(block, due)
            index += BLOCK

    def _next_block(self, silence: np.ndarray) -> np.ndarray:
        with self._lock:
            while len(self._current) < BLOCK and self._queue:
                self._current = np.concatenate([self._current, self._queue.pop(0)])
            if len(self._current) == 0:
                self.spoken.set()
                return silence
            block, self._current = self._current[:BLOCK], self._current[BLOCK:]
        if len(block) < BLOCK:
            block = np.concatenate([block, silence[: BLOCK - len(block)]])
        return block


class SimulatedSpeaker:
    """A speaker double that plays in real time: written audio is "heard" as time passes.

    ``flush()`` drops what has not been played yet, exactly what a real output
    stream does; ``heard()`` returns what was played so far.
    """

    RATE = 24_000

    def __init__(self) -> None:
        self._chunks: list[tuple[float, np.ndarray]] = []  # (play start time, samples)
        self._end = 0.0
        self.flushes: list[float] = []

    def write(self, pcm: bytes) -> None:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        start = max(time.monotonic(), self._end)
        self._chunks.append((start, samples))
        self._end = start + len(samples) / self.RATE

    def flush(self) -> None:
        now = time.monotonic()
        self.flushes.append(now)
        kept = []
        for start, samples in self._chunks:
            if start >= now:
                continue
            played = min(len(samples), int((now - start) * self.RATE))
            kept.append((start, samples[:played]))
        self._chunks = kept
        self._end = now

    @property
    def idle(self) -> bool:
        return time.monotonic() >= self._end

    def heard(self) -> np.ndarray:
        now = time.monotonic()
        parts = []
        for start, samples in self._chunks:
            if start >= now:
                continue
            parts.append(samples[: min(len(samples), int((now - start) * self.RATE))])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def make_config(emu, tmp_path: Path, tools: list[ToolConfig] | None = None, **agent) -> Config:
    config = Config()
    config.endpoints.base_url = emu.http_url
    config.state_dir = tmp_path / "state"
    config.reconnect.base_seconds = 0.05
    config.reconnect.max_seconds = 1.0
    config.agent.tools = tools or []
    for name, value in agent.items():
        setattr(config.agent, name, value)
    return config


def agent_tokens(emu) -> MintedTokens:
    return MintedTokens.agent(
        f"{emu.http_url}/v1/token", Secret(emu.api_key), expires_in_seconds=60
    )


async def wait_for(predicate, timeout: float, what: str, poll: float = 0.02) -> None:
    """Wait until ``predicate()`` is true; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(poll)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve an aiohttp ``app`` on an ephemeral 127.0.0.1 port; yields its base URL."""
    from aiohttp import web

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
