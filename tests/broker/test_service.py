"""The broker on uvicorn in front of the emulator, asked by the device's own token source."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path

import httpx
import pytest
import websockets

from appliance.broker.limits import DEFAULT_LIMITS, Limits
from appliance.broker.local import LocalBroker
from appliance.cloud.tokens import (
    BrokerTokens,
    CheckIn,
    TokenAuthError,
    TokenTransientError,
)
from appliance.emulator import EmulatorThread
from appliance.secrets import Secret


def source(
    broker: LocalBroker, name: str = "room-1", kind: str = "streaming", **kwargs: object
) -> BrokerTokens:
    return BrokerTokens(
        broker.url,
        broker.credential(name),
        kind=kind,  # type: ignore[arg-type]
        **kwargs,
    )  # type: ignore[arg-type]


async def test_a_streaming_token_from_the_broker_opens_a_session(
    broker: LocalBroker, emulator: EmulatorThread
) -> None:
    token = await source(broker).fetch()
    url = f"{emulator.ws_url}/v3/ws?sample_rate=16000&token={token.reveal()}"
    async with websockets.connect(url) as ws:
        begin = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert begin["type"] == "Begin"
        await ws.send(json.dumps({"type": "Terminate"}))


async def test_an_agent_token_from_the_broker_opens_a_conversation(
    broker: LocalBroker, emulator: EmulatorThread
) -> None:
    token = await source(broker, kind="agent").fetch()
    async with websockets.connect(f"{emulator.ws_url}/v1/ws?token={token.reveal()}") as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {}}))
        for _ in range(10):
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if message["type"] == "session.ready":
                break
        else:
            pytest.fail("no session.ready")
        await ws.send(json.dumps({"type": "session.end"}))


async def test_tokens_are_minted_with_short_expiry_and_the_devices_session_cap(
    emulator: EmulatorThread, tmp_path: Path
) -> None:
    from appliance.broker.local import local_broker

    limits = dataclasses.replace(
        DEFAULT_LIMITS, token_expires_seconds=30, default_max_session_seconds=900
    )
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"token": f"tok-{len(seen)}-0123456789"})

    with local_broker(
        emulator.http_url, "the-owners-key-123", tmp_path, ("r1",), limits=limits
    ) as running:
        running.thread.app.minter._client = httpx.AsyncClient(
            transport=httpx.MockTransport(handler)
        )
        await source(running, "r1", "streaming").fetch()
        await source(running, "r1", "agent").fetch()
    streaming, agent = seen
    assert streaming.url.path == "/v3/token" and agent.url.path == "/v1/token"
    assert streaming.headers["authorization"] == "the-owners-key-123"
    assert agent.headers["authorization"] == "Bearer the-owners-key-123"
    for request in seen:
        assert request.url.params["expires_in_seconds"] == "30"
        assert request.url.params["max_session_duration_seconds"] == "900"


async def test_every_token_handed_out_is_a_new_one(broker: LocalBroker) -> None:
    tokens = {
        (await source(broker, kind=kind).fetch()).reveal()
        for kind in ("streaming", "agent")
        for _ in range(4)
    }
    assert len(tokens) == 8


async def test_a_revoked_device_is_refused_like_an_unknown_one(
    broker: LocalBroker,
) -> None:
    good = broker.credential("room-1").reveal()
    await source(broker, "room-2").fetch()
    assert broker.store.revoke("room-2", time.time())
    answers = []
    async with httpx.AsyncClient() as client:
        for credential in (
            broker.credential("room-2").reveal(),  # revoked
            "nobody." + good.partition(".")[2],  # unknown name
            good + "x",  # wrong secret
            "garbage",
        ):
            r = await client.get(
                broker.url,
                params={"kind": "streaming"},
                headers={"Authorization": f"Bearer {credential}"},
            )
            answers.append((r.status_code, r.text, r.headers.get("www-authenticate")))
    assert len(set(answers)) == 1
    assert answers[0][0] == 401
    with pytest.raises(TokenAuthError):
        await source(broker, "room-2").fetch()
    await source(broker, "room-1").fetch()  # the others carry on


class TestRate:
    @pytest.fixture
    def broker_limits(self) -> Limits:
        return dataclasses.replace(DEFAULT_LIMITS, device_requests_per_minute=60.0, device_burst=2)

    async def test_a_device_over_its_rate_gets_429_with_retry_after_then_is_served(
        self, broker: LocalBroker
    ) -> None:
        device = source(broker)
        await device.fetch()
        await device.fetch()
        with pytest.raises(TokenTransientError) as refused:
            await device.fetch()
        assert refused.value.status == 429 and refused.value.retry_after == 1.0
        await source(broker, "room-2").fetch()  # another device is not held back
        await asyncio.sleep(refused.value.retry_after)
        await device.fetch()


class TestOverall:
    @pytest.fixture
    def broker_limits(self) -> Limits:
        return dataclasses.replace(DEFAULT_LIMITS, overall_requests_per_second=0.5, overall_burst=1)

    async def test_past_the_overall_cap_everyone_waits(self, broker: LocalBroker) -> None:
        await source(broker).fetch()
        with pytest.raises(TokenTransientError) as refused:
            await source(broker, "room-2").fetch()
        assert refused.value.status == 429 and refused.value.retry_after == 2.0


@pytest.mark.parametrize(
    "broker_limits", [dataclasses.replace(DEFAULT_LIMITS, upstream_backoff_seconds=2.0)]
)
async def test_an_upstream_failure_is_a_503_with_retry_after_and_no_hot_loop(
    broker: LocalBroker, emulator: EmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    emulator.fail_http(503, count=100, path_prefix="/v3/token")
    issued = emulator.state.tokens.issued
    failures = []
    for name in ("room-1", "room-2") * 4:
        with pytest.raises(TokenTransientError) as exc:
            await source(broker, name).fetch()
        failures.append(exc.value)
    assert all(f.status == 503 and f.retry_after is not None for f in failures)
    # Eight device requests inside the backoff cost the endpoint one request.
    assert emulator.state.counters["http_503_injected"] == 1
    assert emulator.state.tokens.issued == issued
    assert any("upstream" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    emulator.call(lambda: emulator.emulator.app.faults.http.clear())
    assert all(f.retry_after == 2.0 for f in failures)  # whole seconds left of the backoff
    await asyncio.sleep(2.1)
    await source(broker).fetch()
    metrics = httpx.get(broker.thread.base_url + "/metrics").text
    assert 'appliance_broker_upstream_errors_total{kind="streaming"} 1' in metrics
    assert 'appliance_broker_tokens_minted_total{kind="streaming"} 1' in metrics


async def test_a_token_the_endpoint_repeats_is_not_handed_to_a_second_device(
    broker: LocalBroker,
) -> None:
    def same(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token": "always-the-same-token"})

    broker.thread.app.minter._client = httpx.AsyncClient(transport=httpx.MockTransport(same))
    await source(broker, "room-1").fetch()
    with pytest.raises(TokenTransientError) as exc:
        await source(broker, "room-2").fetch()
    assert exc.value.status == 503


async def test_the_check_in_shows_in_the_fleet_and_the_metrics(broker: LocalBroker) -> None:
    checkin = CheckIn(version="9.9.9")
    checkin.spool_backlog = 3
    checkin.last_error = "network unreachable"
    await source(broker, checkin=checkin).fetch()
    room2 = {"Authorization": f"Bearer {broker.credential('room-2').reveal()}"}
    async with httpx.AsyncClient() as client:  # query fields work too
        await client.get(
            broker.url,
            params={"kind": "agent", "version": "1.0", "spool_backlog": "0"},
            headers=room2,
        )
        fleet = (await client.get(broker.thread.base_url + "/fleet")).json()["devices"]
        metrics = (await client.get(broker.thread.base_url + "/metrics")).text
    room1, second = fleet
    assert (
        room1["name"],
        room1["version"],
        room1["spool_backlog"],
        room1["last_error"],
        room1["last_kind"],
        room1["last_result"],
    ) == ("room-1", "9.9.9", 3, "network unreachable", "streaming", "ok")
    assert (second["version"], second["spool_backlog"]) == ("1.0", 0)
    assert 'appliance_broker_device_spool_backlog{device="room-1"} 3' in metrics
    assert 'appliance_broker_device_info{device="room-1",version="9.9.9",error="1"} 1' in metrics
    assert 'appliance_broker_device_last_seen_seconds{device="room-2"}' in metrics


def test_the_device_check_in_follows_the_event_feed() -> None:
    from appliance.events import ErrorReported, EventBus, SpoolStatus

    bus = EventBus()
    checkin = CheckIn(version="1.2.3")
    bus.add_callback(checkin.observe)
    bus.publish(SpoolStatus(waiting=4))
    bus.publish(ErrorReported(message="upload failed:\nHTTP 503 ünïcode", where="spool"))
    headers = checkin.headers()
    assert headers == {
        "X-Appliance-Version": "1.2.3",
        "X-Appliance-Spool-Backlog": "4",
        "X-Appliance-Last-Error": "upload failed: HTTP 503 ?n?code",
    }


async def test_oversized_headers_and_bodies_are_refused(broker: LocalBroker) -> None:
    auth = {"Authorization": f"Bearer {broker.credential('room-1').reveal()}"}
    async with httpx.AsyncClient() as client:
        big = await client.get(
            broker.url, params={"kind": "streaming"}, headers={**auth, "X-Padding": "a" * 9000}
        )
        body = await client.request(
            "GET", broker.url, params={"kind": "streaming"}, headers=auth, content=b"x" * 5000
        )
    assert big.status_code in (400, 431)  # 431 from the app, or uvicorn's own 400
    assert body.status_code == 413


async def test_the_audit_log_says_who_what_and_how_never_the_token_or_key(
    broker: LocalBroker, emulator: EmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="appliance.broker.audit")
    token = await source(broker, kind="agent").fetch()
    with pytest.raises(TokenAuthError):
        await BrokerTokens(broker.url, Secret("room-1.wrong-secret-value")).fetch()
    lines = [
        json.loads(r.getMessage()) for r in caplog.records if r.name == "appliance.broker.audit"
    ]
    assert [(x["device"], x["kind"], x["result"], x["status"]) for x in lines] == [
        ("room-1", "agent", "ok", 200),
        (None, "streaming", "unauthorized", 401),
    ]
    assert all(x["time"].endswith("+00:00") for x in lines)
    text = caplog.text
    assert token.reveal() not in text and emulator.api_key not in text


async def test_health_and_an_admin_token_for_metrics_and_fleet(broker: LocalBroker) -> None:
    base = broker.thread.base_url
    async with httpx.AsyncClient() as client:
        assert (await client.get(base + "/healthz")).json() == {"status": "ok"}
        broker.thread.app.admin_token = Secret("admin-token-0123456789")
        assert (await client.get(base + "/metrics")).status_code == 401
        assert (await client.get(base + "/fleet")).status_code == 401
        ok = await client.get(
            base + "/metrics", headers={"Authorization": "Bearer admin-token-0123456789"}
        )
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
        assert (await client.get(base + "/nothing")).status_code == 404
        assert (await client.post(base + "/token")).status_code == 405


async def test_the_pre_recorded_proxy_needs_a_device_and_forwards_only_the_uploaders_calls(
    broker: LocalBroker, emulator: EmulatorThread
) -> None:
    base = broker.thread.base_url
    device = broker.credential("room-1").reveal()
    async with httpx.AsyncClient() as client:
        refused = await client.post(
            base + "/v2/upload",
            content=b"RIFF....",
            headers={"Authorization": "room-1.wrong-secret-123"},
        )
        assert refused.status_code == 401
        assert (
            await client.delete(base + "/v2/transcript/abc", headers={"Authorization": device})
        ).status_code == 404
        assert (
            await client.get(base + "/v2/anything", headers={"Authorization": device})
        ).status_code == 404
        upload = await client.post(
            base + "/v2/upload", content=b"\0" * 64000, headers={"Authorization": device}
        )  # raw, as RestClient
        assert upload.status_code == 200 and "upload_url" in upload.json()
        listing = await client.get(
            base + "/v2/transcript",
            params={"limit": "1"},
            headers={"Authorization": f"Bearer {device}"},
        )
        assert listing.status_code == 200
    metrics = httpx.get(base + "/metrics").text
    assert 'appliance_broker_rest_proxied_total{status="200"} 2' in metrics


def test_the_device_sends_recordings_to_the_broker_when_it_has_no_key(tmp_path: Path) -> None:
    from appliance.cloud.rest import RestClient
    from appliance.config import Config

    config = Config()
    config.auth.token_broker.url = "https://broker.example.org:8443/token"
    config.broker_credential = Secret("room-1.device-secret-value")
    client = RestClient.from_config(config)
    assert client.base_url == "https://broker.example.org:8443"
    config.endpoints.rest_url = "https://uploads.example.org"
    assert RestClient.from_config(config).base_url == "https://uploads.example.org"


async def test_the_app_itself_refuses_headers_past_its_limit(tmp_path: Path) -> None:
    """Behind a server with a looser header cap than uvicorn's, the app still says 431."""
    from appliance.broker.server import build_app, upstream_urls
    from appliance.broker.store import FileStore

    limits = dataclasses.replace(DEFAULT_LIMITS, max_header_bytes=300)
    app = build_app(
        FileStore(tmp_path / "d.json"),
        Secret("k" * 32),
        upstream_urls(base_url="http://127.0.0.1:9"),
        limits=limits,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://broker") as client:
        small = await client.get("/healthz")
        big = await client.get("/token", params={"kind": "agent"}, headers={"X-Pad": "a" * 400})
    assert small.status_code == 200
    assert big.status_code == 431
