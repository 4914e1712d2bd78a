"""A broker in front of the test's emulator, with devices enrolled."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.broker.limits import DEFAULT_LIMITS, Limits
from appliance.broker.local import LocalBroker, local_broker
from appliance.emulator import EmulatorThread


@pytest.fixture
def broker_limits() -> Limits:
    """Override to change the broker's limits in a test module."""
    return dataclasses.replace(DEFAULT_LIMITS, upstream_backoff_seconds=0.5)


@pytest.fixture
def broker(
    emulator: EmulatorThread, tmp_path: Path, broker_limits: Limits
) -> Iterator[LocalBroker]:
    with local_broker(
        emulator.http_url,
        emulator.api_key,
        tmp_path / "fleet",
        devices=("room-1", "room-2"),
        limits=broker_limits,
    ) as running:
        yield running
