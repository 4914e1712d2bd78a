"""Watching a broker as Home Assistant would, and a bridge's settings for the test broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiomqtt

from appliance.config import MqttConfig
from appliance.events import EventBus
from appliance.mqtt.bridge import ControlFn, MqttBridge
from appliance.protocol.retry import RetryLimits
from appliance.secrets import Secret

from .conftest import DEVICE_PASSWORD, DEVICE_USER, OBSERVER_PASSWORD, OBSERVER_USER, Broker

#: Fast retries for tests (the floor the project's backoff allows).
TEST_RETRY = RetryLimits(base_seconds=0.1, cap_seconds=0.5, floor_seconds=0.05)


def settings_for(broker: Broker, **overrides: object) -> MqttConfig:
    settings = MqttConfig(
        enabled=True,
        host="localhost" if broker.tls else "127.0.0.1",
        port=broker.port,
        tls=broker.tls,
        ca_file=broker.ca,
        username=DEVICE_USER,
        base_topic="appliance/dev1",
    )
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


def make_bridge(
    broker: Broker,
    events: EventBus,
    state_dir: Path,
    *,
    password: str = DEVICE_PASSWORD,
    control: ControlFn | None = None,
    **overrides: object,
) -> MqttBridge:
    return MqttBridge(
        settings_for(broker, **overrides),
        events,
        device_id="dev1",
        state_dir=state_dir,
        version="0.1.0",
        retry=TEST_RETRY,
        password=Secret(password),
        control=control,
    )


class Watcher:
    """Every message on the topics it subscribed to, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, bool]] = []  # topic, payload, retained

    def on(self, topic: str) -> list[str]:
        return [p for t, p, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict[str, object]]:
        return [json.loads(p) for p in self.on(topic) if p]

    def latest(self, topic: str) -> str | None:
        found = self.on(topic)
        return found[-1] if found else None

    async def wait_for(self, check: Callable[[], object], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {self.messages[-20:]}")
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def watching(broker: Broker, *topics: str) -> AsyncIterator[Watcher]:
    """A watcher logged in as the observer, subscribed to ``topics`` (QoS 1)."""
    watcher = Watcher()
    import ssl

    context = ssl.create_default_context(cafile=str(broker.ca)) if broker.ca else None
    client = aiomqtt.Client(
        "localhost" if broker.tls else "127.0.0.1",
        broker.port,
        username=OBSERVER_USER,
        password=OBSERVER_PASSWORD,
        tls_context=context,
    )
    async with client:
        for topic in topics:
            await client.subscribe(topic, qos=1)

        async def receive() -> None:
            async for m in client.messages:
                payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                watcher.messages.append((str(m.topic), payload.decode(), bool(m.retain)))

        task = asyncio.create_task(receive())
        try:
            yield watcher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task


async def publish(broker: Broker, topic: str, payload: str, *, retain: bool = False) -> None:
    """One message as the observer (a dashboard sending a command)."""
    client = aiomqtt.Client(
        "127.0.0.1", broker.port, username=OBSERVER_USER, password=OBSERVER_PASSWORD
    )
    async with client:
        await client.publish(topic, payload, qos=1, retain=retain)
