"""Building an outbox over a real spool for the tests (fast retries, a temp state dir)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.config import Config, OutboxConfig
from appliance.events import EventBus
from appliance.outbox.delivery import Outbox
from appliance.outbox.destinations import destination_for
from appliance.secrets import Secret
from appliance.spool import Spool

SECRET = "Bearer tok-9f8e7d6c5b4a"


def outbox_config(tmp_path: Path, **box: object) -> Config:
    settings: dict[str, Any] = {
        "enabled": True,
        "retry_floor_seconds": 0.1,
        "retry_base_seconds": 0.1,
        "retry_cap_seconds": 0.2,
        "timeout_seconds": 5.0,
        **box,
    }
    return Config(state_dir=tmp_path / "state", outbox=OutboxConfig(**settings))


def make_outbox(
    spool: Spool, config: Config, events: EventBus | None = None, secret: str | None = SECRET
) -> Outbox:
    auth = Secret(secret) if secret is not None else None
    return Outbox(spool, config, destination_for(config.outbox, auth), events)


def write_session(state_dir: Path, session_id: str, texts: list[str]) -> None:
    """A live session's JSONL as the live runner writes it: one final turn a line."""
    folder = state_dir / "transcripts"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{session_id}.jsonl", "w", encoding="utf-8") as f:
        for order, text in enumerate(texts):
            start = 1000 * order
            words = [{"text": text, "start_ms": start, "end_ms": start + 500, "confidence": 0.9}]
            record = {"session_id": session_id, "turn_order": order, "text": text,
                      "words": words, "session_start_time": 1700000000.0}  # fmt: skip
            f.write(json.dumps(record) + "\n")
