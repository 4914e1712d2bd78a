"""Pieces the summary tests share: a worker on the real spool database, talking to the emulator."""

from __future__ import annotations

import random
from pathlib import Path

from appliance import events as ev
from appliance.cloud.gateway import GatewayClient
from appliance.config import SummaryConfig
from appliance.secrets import Secret
from appliance.spool import Spool
from appliance.summary.jobs import SummaryJobs
from appliance.summary.stored import SummaryPaths
from appliance.summary.worker import SummaryWorker

CHAT = "/v1/chat/completions"


def gateway(emulator, key: str | None = None) -> GatewayClient:
    return GatewayClient(
        emulator.http_url + CHAT, Secret(key or emulator.api_key), timeout_seconds=5
    )


def make_worker(
    emulator,
    spool: Spool,
    state_dir: Path,
    events: ev.EventBus | None = None,
    *,
    key: str | None = None,
    **summary,
) -> SummaryWorker:
    """A worker as the daemon wires it (its own connection to the spool's database)."""
    return SummaryWorker(
        SummaryJobs(spool.store.path),
        gateway(emulator, key),
        SummaryConfig(enabled=True, **summary),
        SummaryPaths(state_dir, spool.root),
        events,
        recordings=spool.store,
        retry_base=0.1,
        retry_cap=0.4,
        rng=random.Random(7),
    )


async def close(worker: SummaryWorker) -> None:
    worker.jobs.close()
    await worker.client.aclose()


def completions(emulator) -> int:
    """Chat completions the emulator answered (each one charged on the real service)."""
    return len(emulator.state.chat_completions)
