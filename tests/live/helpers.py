"""Shared pieces of the live-session tests: a paced "microphone", config, a real spool."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np

from appliance.audio.ring import RingBuffer
from appliance.cloud.rest import RestClient, RestTimeouts
from appliance.cloud.tokens import MintedTokens
from appliance.config import Config
from appliance.emulator.recognizer import digits_of
from appliance.protocol.streaming import STREAM_RATE
from appliance.secrets import Secret
from appliance.spool import Spool, SpoolParams
from appliance.spool import store as st

CAPTURE_RATE = 48_000
BLOCK = 960  # 20 ms


class Feeder(threading.Thread):
    """Writes ``samples`` into the ring at real-time pace, like a microphone, then silence."""

    def __init__(self, ring: RingBuffer, samples: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.ring = ring
        self.samples = samples
        self.done = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        t0 = time.monotonic()
        i = 0
        silence = np.zeros(BLOCK, dtype=np.int16)
        while not self.halt.is_set():
            block = self.samples[i : i + BLOCK] if i < len(self.samples) else silence
            if i >= len(self.samples):
                self.done.set()
            if len(block) < BLOCK:
                block = np.concatenate([block, silence[: BLOCK - len(block)]])
            due = t0 + i / CAPTURE_RATE
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.ring.write(block, due)
            i += BLOCK


def make_config(emu, tmp_path: Path, **live) -> Config:
    config = Config()
    config.endpoints.base_url = emu.http_url
    config.state_dir = tmp_path / "state"
    config.upload.poll_seconds = 0.1
    for name, value in live.items():
        setattr(config.live, name, value)
    return config


def streaming_tokens(emu, config: Config) -> MintedTokens:
    return MintedTokens.streaming(
        config.urls.streaming_token_url, Secret(emu.api_key), expires_in_seconds=60
    )


def real_spool(tmp_path: Path, events=None, **params) -> Spool:
    """The real spool in a temporary directory (no free-space floor: tmp may be small)."""
    base = dict(directory=tmp_path / "spool", quota_bytes=50_000_000, min_free_bytes=0)
    base.update(params)
    return Spool(SpoolParams(**base), events)


def rest_client(emu) -> RestClient:
    timeouts = RestTimeouts(connect=2, read=5, write=5, pool=2)
    return RestClient(emu.http_url, Secret(emu.api_key), timeouts=timeouts)


def kept_samples(spool: Spool, session_id: str) -> int:
    """Samples actually on disk for a session's live-gap recordings."""
    return sum(
        row.data_bytes // 2
        for row in spool.list()
        if row.origin == "live-gap" and row.session_id == session_id
    )


def heard_live(turns) -> list[tuple[float, str]]:
    """(session time in s, digit) for every word of the final live turns."""
    return [
        (word.start_ms / 1000, d)
        for turn in turns
        if turn.final
        for word in turn.words
        for d in digits_of(word.text)
    ]


def heard_in_spool_transcripts(spool: Spool, session_id: str) -> list[tuple[float, str]]:
    """(session time in s, digit) from the stored pre-recorded transcripts of a session's gaps.

    Each word's time is the recording's ``session_offset`` plus the word's start in it.
    """
    heard = []
    for row in spool.list():
        if row.origin != "live-gap" or row.session_id != session_id:
            continue
        assert row.state == st.COMPLETED, (row.id, row.state, row.last_error)
        data = json.loads(spool.artifact_path(row.id, "json").read_text())
        base = row.session_offset / STREAM_RATE
        for word in data["words"]:
            heard += [(base + word["start"] / 1000, d) for d in digits_of(word["text"])]
    return heard


async def until_transcribed(spool: Spool, uploader, timeout: float) -> None:
    """Until the uploader has finished every spooled recording (woken as the daemon does)."""
    deadline = time.monotonic() + timeout
    while spool.open_writers or spool.store.all(st.PENDING_STATES):
        assert time.monotonic() < deadline, [(r.id, r.state) for r in spool.list()]
        uploader.wake()
        await asyncio.sleep(0.1)
