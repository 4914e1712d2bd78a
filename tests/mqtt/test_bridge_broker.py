"""The MQTT component against a real Mosquitto, driven by synthetic events (no daemon)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance import events as ev
from appliance.mqtt.bridge import MqttBridge, remove_discovery
from appliance.mqtt.discovery import DISCOVERY_MARKER
from appliance.secrets import Secret

from .conftest import DEVICE_PASSWORD, Broker
from .helpers import make_bridge, publish, settings_for, watching

BASE = "appliance/dev1"


@contextlib.asynccontextmanager
async def running(bridge: MqttBridge, connect: bool = True) -> AsyncIterator[MqttBridge]:
    task = asyncio.create_task(bridge.run())
    try:
        if connect:
            await asyncio.wait_for(bridge.connected.wait(), 10)
        yield bridge
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_discovery_configs_are_retained_under_one_device(broker: Broker, tmp_path: Path):
    events = ev.EventBus()
    async with running(make_bridge(broker, events, tmp_path)):
        pass
    # A watcher arriving later gets them from the broker: they are retained.
    async with watching(broker, "homeassistant/#") as w:
        await w.wait_for(lambda: len(w.messages) >= 13)
    configs = {t: json.loads(p) for t, p, retained in w.messages if retained}
    assert len(configs) == len(w.messages) == 13
    assert {c["device"]["identifiers"][0] for c in configs.values()} == {"appliance_dev1"}
    kinds = {t.split("/")[1] for t in configs}
    assert kinds == {"sensor", "select", "button", "binary_sensor", "number", "switch"}
    select = configs["homeassistant/select/dev1/mode/config"]
    assert select["command_topic"] == f"{BASE}/cmd/mode" and select["options"] == [
        "live", "agent", "record",
    ]  # fmt: skip
    assert set(json.loads((tmp_path / DISCOVERY_MARKER).read_text())["topics"]) == set(configs)


async def test_state_is_retained_and_republished_and_events_carry_their_seq(
    broker: Broker, tmp_path: Path
):
    events = ev.EventBus()
    events.publish(ev.StateChanged(state="idle", mode="live", detail="live transcription"))
    async with watching(broker, f"{BASE}/#") as w, running(make_bridge(broker, events, tmp_path)):
        events.publish(ev.StateChanged(state="listening", mode="live"))
        final = events.publish(ev.TurnFinal(session_id="s1", turn_order=0, text="four seven"))
        await w.wait_for(lambda: w.on(f"{BASE}/event/turn"))
    assert w.latest(f"{BASE}/availability") == "offline"  # a clean stop says so
    states = [json.loads(p)["state"] for p in w.on(f"{BASE}/state")]
    assert states == ["idle", "listening"]  # the state before the bridge started, then the change
    (turn,) = w.json_on(f"{BASE}/event/turn")
    assert turn["text"] == "four seven" and turn["seq"] == final.seq and "words" not in turn
    async with watching(broker, f"{BASE}/#") as late:  # retained: a newcomer sees the state
        await late.wait_for(lambda: late.on(f"{BASE}/state") and late.on(f"{BASE}/version"))
    assert json.loads(late.latest(f"{BASE}/state") or "")["state"] == "listening"
    assert late.on(f"{BASE}/event/turn") == []  # events are not retained


async def test_tls_broker_verified_against_the_configured_ca(tls_broker: Broker, tmp_path: Path):
    events = ev.EventBus()
    async with (
        watching(tls_broker, f"{BASE}/#") as w,
        running(make_bridge(tls_broker, events, tmp_path)),
    ):
        events.publish(ev.TurnFinal(session_id="s1", turn_order=0, text="over tls"))
        await w.wait_for(lambda: w.on(f"{BASE}/event/turn"))
    assert w.json_on(f"{BASE}/event/turn")[0]["text"] == "over tls"


async def test_tls_without_the_ca_is_refused_and_retried(tls_broker: Broker, tmp_path: Path):
    bridge = make_bridge(tls_broker, ev.EventBus(), tmp_path, ca_file=None)
    async with running(bridge, connect=False):
        await asyncio.sleep(1.0)
    assert bridge.connects == 0 and bridge.failures >= 2
    assert "certificate verify failed" in (bridge.last_problem or "").lower()


async def test_wrong_password_is_a_clear_error_and_a_slow_retry(broker: Broker, tmp_path: Path):
    bridge = make_bridge(broker, ev.EventBus(), tmp_path, password="wrong", auth_retry_seconds=5.0)
    async with running(bridge, connect=False):
        await asyncio.sleep(1.5)
    assert bridge.connects == 0
    assert bridge.failures == 1  # no second try within auth_retry_seconds
    assert "refused the login" in (bridge.last_problem or "")
    assert "mqtt.password_file" in (bridge.last_problem or "")
    assert DEVICE_PASSWORD not in (bridge.last_problem or "") and "wrong" not in (
        bridge.last_problem or ""
    )


async def test_commands_are_validated_acknowledged_and_refused_with_a_reason(
    broker: Broker, tmp_path: Path
):
    calls: list[tuple[str, dict[str, str]]] = []

    async def control(action: str, args: dict[str, str]) -> dict[str, Any]:
        calls.append((action, args))
        if action == "stop_session":
            return {"ok": False, "error": "no session is running"}
        return {"ok": True, "mode": "live", "phase": "active"}

    bridge = make_bridge(broker, ev.EventBus(), tmp_path, control=control)
    # Left retained by mistake: it would start a session at every reconnect.
    await publish(broker, f"{BASE}/cmd/start", "PRESS", retain=True)
    async with watching(broker, f"{BASE}/result") as w, running(bridge):
        await w.wait_for(lambda: len(w.messages) >= 1)
        await publish(broker, f"{BASE}/cmd/start", "", retain=True)  # clears it
        await publish(broker, f"{BASE}/cmd/start", '{"request_id": "r1"}')
        await publish(broker, f"{BASE}/cmd/stop", "PRESS")
        await publish(broker, f"{BASE}/cmd/mode", "karaoke")
        await publish(broker, f"{BASE}/cmd/mode", "agent")
        await publish(broker, f"{BASE}/cmd/reboot", "")
        await w.wait_for(lambda: len(w.messages) >= 7)
    retained, cleared, *results = w.json_on(f"{BASE}/result")
    assert retained["ok"] is False and "retained" in str(retained["reason"])
    assert cleared["ok"] is True  # an empty retained message is delivered live once
    assert results[0] == {"command": "start", "request_id": "r1", "ok": True, "mode": "live",
                          "phase": "active"}  # fmt: skip
    assert results[1] == {"command": "stop", "ok": False, "reason": "no session is running"}
    assert results[2]["ok"] is False and "mode must be one of" in str(results[2]["reason"])
    assert results[3]["ok"] is True
    assert results[4]["ok"] is False and "unknown command" in str(results[4]["reason"])
    assert calls == [
        ("start_session", {}), ("start_session", {}), ("stop_session", {}),
        ("set_mode", {"mode": "agent"}),
    ]  # fmt: skip


async def test_disabled_removes_what_an_earlier_run_published(broker: Broker, tmp_path: Path):
    events = ev.EventBus()
    async with running(make_bridge(broker, events, tmp_path)):
        events.publish(ev.StateChanged(state="idle", mode="live"))
        await asyncio.sleep(0.2)
    settings = settings_for(broker, enabled=False)
    removed = await remove_discovery(
        settings, device_id="dev1", state_dir=tmp_path, password=Secret(DEVICE_PASSWORD)
    )
    assert removed == 13 and not (tmp_path / DISCOVERY_MARKER).exists()
    async with watching(broker, "homeassistant/#", f"{BASE}/#") as w:
        await asyncio.sleep(0.5)
    assert [m for m in w.messages if m[1]] == []  # no retained config or state is left


async def test_broker_restart_resumes_with_state_republished_and_no_event_lost(
    broker: Broker, tmp_path: Path
):
    events = ev.EventBus()
    bridge = make_bridge(broker, events, tmp_path)
    async with running(bridge):
        events.publish(ev.StateChanged(state="listening", mode="live"))
        events.publish(ev.TurnFinal(session_id="s1", turn_order=0, text="one"))
        await asyncio.sleep(0.3)
        broker.stop()
        events.publish(ev.TurnFinal(session_id="s1", turn_order=1, text="two"))
        await asyncio.sleep(0.5)
        assert not bridge.connected.is_set()
        broker.start()
        async with watching(broker, f"{BASE}/#") as w:
            start = time.monotonic()
            await asyncio.wait_for(bridge.connected.wait(), 10)
            events.publish(ev.TurnFinal(session_id="s1", turn_order=2, text="three"))
            await w.wait_for(lambda: len(w.on(f"{BASE}/event/turn")) >= 2)
            await w.wait_for(lambda: w.on(f"{BASE}/state"))
    assert time.monotonic() - start < 5
    texts = [t["text"] for t in w.json_on(f"{BASE}/event/turn")]
    assert texts == ["two", "three"]  # the one published while the broker was away was kept
    assert json.loads(w.latest(f"{BASE}/state") or "")["state"] == "listening"  # republished
    assert bridge.dropped == 0


@pytest.mark.parametrize("outbox", [10])
async def test_a_full_outbox_drops_the_oldest_and_counts_them(
    broker: Broker, tmp_path: Path, outbox: int
):
    broker.stop()
    events = ev.EventBus()
    bridge = make_bridge(broker, events, tmp_path, outbox_messages=outbox)
    async with running(bridge, connect=False):
        await asyncio.sleep(0.1)
        for i in range(25):
            events.publish(ev.TurnFinal(session_id="s1", turn_order=i, text=f"t{i}"))
        await asyncio.sleep(0.1)
        broker.start()
        async with watching(broker, f"{BASE}/event/turn") as w:
            await asyncio.wait_for(bridge.connected.wait(), 10)
            await w.wait_for(lambda: len(w.messages) >= outbox)
            await asyncio.sleep(0.2)
    assert [t["turn_order"] for t in w.json_on(f"{BASE}/event/turn")] == list(range(15, 25))
    assert bridge.dropped == 15


async def test_a_start_with_mqtt_disabled_clears_the_discovery_published_before(
    broker: Broker, tmp_path: Path
):
    from appliance import wiring
    from appliance.config import Config

    events = ev.EventBus()
    async with running(make_bridge(broker, events, tmp_path)):
        pass
    config = Config()
    config.state_dir = tmp_path
    (tmp_path / "device-id").write_text("dev1\n")
    config.mqtt = settings_for(broker, enabled=False)
    config.mqtt_password = Secret(DEVICE_PASSWORD)
    async with contextlib.AsyncExitStack() as stack:
        assert await wiring.open_mqtt(config, events, _no_control, _NoMicrophone(), stack) is None
        deadline = time.monotonic() + 10
        while (tmp_path / DISCOVERY_MARKER).exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    async with watching(broker, "homeassistant/#") as w:
        await asyncio.sleep(0.5)
    assert w.messages == []


async def _no_control(action: str, args: dict[str, str]) -> dict[str, Any]:
    raise AssertionError("no command was sent")


class _NoMicrophone:
    def level_dbfs(self, window_seconds: float = 0.5) -> Any:
        raise AssertionError("a disabled MQTT reads no level")


async def test_a_control_that_fails_is_answered_and_the_bridge_goes_on(
    broker: Broker, tmp_path: Path
):
    async def control(action: str, args: dict[str, str]) -> dict[str, Any]:
        if action == "start_session":
            raise RuntimeError("boom")
        return {"ok": True}

    bridge = make_bridge(broker, ev.EventBus(), tmp_path, control=control)
    async with watching(broker, f"{BASE}/result") as w, running(bridge):
        await publish(broker, f"{BASE}/cmd/start", "")
        await publish(broker, f"{BASE}/cmd/stop", "")
        await w.wait_for(lambda: len(w.messages) >= 2)
    failed, stopped = w.json_on(f"{BASE}/result")
    assert failed == {"command": "start", "ok": False, "reason": "failed: boom"}
    assert stopped["ok"] is True and bridge.connects == 1
