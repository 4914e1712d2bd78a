"""Token sources against a small token server on loopback (real HTTP, scripted answers)."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest
from aiohttp import web

from appliance.cloud.tokens import (
    BrokerTokens,
    MintedTokens,
    SharedHttpClient,
    TokenAuthError,
    TokenError,
    TokenTransientError,
)
from appliance.connection.tokens import TokenCoordinator
from appliance.logs import RedactingFilter
from appliance.protocol.retry import RetryLimits
from appliance.secrets import Secret

API_KEY = Secret("test-api-key-0123456789")
CREDENTIAL = Secret("device-credential-abcdef")


class TokenServer:
    """Serves /v3/token, /v1/token and /broker; records requests; answers as scripted."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], str | None]] = []
        self.script: list[tuple[int, dict[str, str] | None]] = []  # (status, headers) next
        self.repeat_token: str | None = None
        self.peers: list[object] = []  # the client address of each request (its TCP connection)
        self._counter = itertools.count(1)
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            (request.path, dict(request.query), request.headers.get("Authorization"))
        )
        self.peers.append(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        if self.script:
            status, headers = self.script.pop(0)
            return web.json_response({"error": "scripted"}, status=status, headers=headers)
        token = self.repeat_token or f"tok-{next(self._counter):06d}-xxxxxxxx"
        return web.json_response({"token": token})


@pytest.fixture
async def token_server():
    server = TokenServer()
    app = web.Application()
    for path in ("/v3/token", "/v1/token", "/broker"):
        app.router.add_get(path, server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


async def test_streaming_mint_sends_raw_key_and_parameters(token_server):
    source = MintedTokens.streaming(
        f"{token_server.url}/v3/token",
        API_KEY,
        expires_in_seconds=60,
        max_session_duration_seconds=3600,
    )
    token = await source.fetch()
    assert token.reveal().startswith("tok-")
    path, query, auth = token_server.requests[0]
    assert path == "/v3/token"
    assert query == {"expires_in_seconds": "60", "max_session_duration_seconds": "3600"}
    assert auth == API_KEY.reveal()


async def test_agent_mint_sends_bearer_key(token_server):
    source = MintedTokens.agent(f"{token_server.url}/v1/token", API_KEY, expires_in_seconds=30)
    await source.fetch()
    path, query, auth = token_server.requests[0]
    assert path == "/v1/token"
    assert query == {"expires_in_seconds": "30"}
    assert auth == f"Bearer {API_KEY.reveal()}"


def test_mint_parameters_are_checked_and_clamped():
    with pytest.raises(ValueError):
        MintedTokens.streaming("http://127.0.0.1:1/v3/token", API_KEY, expires_in_seconds=601)
    source = MintedTokens.streaming(
        "http://127.0.0.1:1/v3/token", API_KEY, max_session_duration_seconds=5
    )
    assert source._params["max_session_duration_seconds"] == "60"


async def test_broker_sends_device_credential_as_bearer(token_server):
    source = BrokerTokens(f"{token_server.url}/broker", CREDENTIAL, kind="agent")
    token = await source.fetch()
    assert token.reveal().startswith("tok-")
    path, query, auth = token_server.requests[0]
    assert (path, query, auth) == ("/broker", {"kind": "agent"}, f"Bearer {CREDENTIAL.reveal()}")


async def test_every_fetch_is_a_new_token(token_server):
    source = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY)
    tokens = [(await source.fetch()).reveal() for _ in range(5)]
    assert len(set(tokens)) == 5


async def test_a_repeated_token_from_the_server_is_refused(token_server):
    token_server.repeat_token = "same-token-every-time"
    source = BrokerTokens(f"{token_server.url}/broker", CREDENTIAL)
    await source.fetch()
    with pytest.raises(TokenError, match="before"):
        await source.fetch()


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credential_is_an_auth_error(token_server, status):
    token_server.script.append((status, None))
    source = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY)
    with pytest.raises(TokenAuthError) as info:
        await source.fetch()
    assert info.value.status == status
    assert API_KEY.reveal() not in str(info.value)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(token_server, status):
    token_server.script.append((status, None))
    source = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY)
    with pytest.raises(TokenTransientError) as info:
        await source.fetch()
    assert info.value.status == status
    assert info.value.retry_after is None


async def test_rate_limit_carries_retry_after(token_server):
    token_server.script.append((429, {"Retry-After": "7"}))
    source = BrokerTokens(f"{token_server.url}/broker", CREDENTIAL)
    with pytest.raises(TokenTransientError) as info:
        await source.fetch()
    assert (info.value.status, info.value.retry_after) == (429, 7.0)


async def test_bad_request_is_neither_auth_nor_transient(token_server):
    token_server.script.append((400, None))
    source = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY)
    with pytest.raises(TokenError) as info:
        await source.fetch()
    assert not isinstance(info.value, TokenAuthError | TokenTransientError)


async def test_unreachable_server_is_transient():
    # A port nobody listens on: connection refused.
    source = MintedTokens.streaming("http://127.0.0.1:9/v3/token", API_KEY)
    with pytest.raises(TokenTransientError):
        await source.fetch()


async def test_tokens_are_scrubbed_from_logs(token_server):
    source = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY)
    token = await source.fetch()
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "got %s", (token.reveal(),), None)
    RedactingFilter().filter(record)
    assert token.reveal() not in record.getMessage()


class CountingSource:
    """A TokenSource over the token server that counts fetches (the wrapper's inner source)."""

    def __init__(self, inner: MintedTokens) -> None:
        self.inner = inner
        self.calls = 0
        self.lifetime_seconds = inner.lifetime_seconds

    async def fetch(self) -> Secret:
        self.calls += 1
        return await self.inner.fetch()


async def _until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_prefetch_hands_out_a_ready_token_once(token_server):
    inner = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY, expires_in_seconds=60)
    tokens = TokenCoordinator(inner)
    tokens.start()
    try:
        await _until(lambda: tokens.has_ready_token)
        requests_before = len(token_server.requests)
        first = await tokens.fetch()  # the ready one: no request needed for it
        assert len(token_server.requests) == requests_before
        tokens.note_connection_ended()  # the connection made with it is over
        await _until(lambda: tokens.has_ready_token)  # refilled after the refill delay
        second = await tokens.fetch()
        third = await tokens.fetch()
        assert len({first.reveal(), second.reveal(), third.reveal()}) == 3
    finally:
        await tokens.aclose()


async def test_concurrent_fetches_never_share_a_token(token_server):
    inner = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY, expires_in_seconds=60)
    tokens = TokenCoordinator(inner)
    tokens.start()
    try:
        await _until(lambda: tokens.has_ready_token)
        got = await asyncio.gather(*(tokens.fetch() for _ in range(4)))
        assert len({t.reveal() for t in got}) == 4
    finally:
        await tokens.aclose()


async def test_prefetch_remints_before_expiry(token_server):
    inner = CountingSource(
        MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY, expires_in_seconds=1)
    )
    tokens = TokenCoordinator(inner, refresh_margin_seconds=0.7)  # replace every 0.3 s
    tokens.start()
    try:
        await _until(lambda: inner.calls >= 3 and tokens.has_ready_token)
        assert tokens.discarded >= 1  # an unused token was replaced, not kept past its time
        assert tokens.handed_out == 0
    finally:
        await tokens.aclose()


async def test_stale_ready_token_is_not_handed_out(token_server):
    now = [0.0]
    inner = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY, expires_in_seconds=60)
    tokens = TokenCoordinator(inner, clock=lambda: now[0])
    tokens._ready = (Secret("stale-token-xxxx"), 10.0)
    now[0] = 11.0
    got = await tokens.fetch()
    assert got.reveal() != "stale-token-xxxx"
    assert tokens.discarded == 1


async def test_the_keeper_survives_errors_and_fetch_reports_them(token_server):
    token_server.script.extend([(503, None)] * 3)
    inner = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY, expires_in_seconds=60)
    tokens = TokenCoordinator(inner, retry=RetryLimits(0.1, 0.2, 0.1))
    tokens.start()
    try:
        await _until(lambda: tokens.has_ready_token)
        assert len(token_server.requests) >= 3
    finally:
        await tokens.aclose()
    token_server.script.append((401, None))
    with pytest.raises(TokenAuthError):
        await tokens.fetch()


async def test_a_second_fetch_reuses_the_client_and_its_connection(token_server):
    source = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY)
    try:
        first, second = await source.fetch(), await source.fetch()
    finally:
        await source.aclose()
    assert first.reveal() != second.reveal()
    assert len(token_server.peers) == 2 and token_server.peers[0] is not None
    assert token_server.peers[0] == token_server.peers[1]  # same TCP connection, kept alive


async def test_sources_sharing_a_client_share_one_connection_until_it_is_closed(token_server):
    shared = SharedHttpClient()
    streaming = MintedTokens.streaming(f"{token_server.url}/v3/token", API_KEY, client=shared)
    agent = MintedTokens.agent(f"{token_server.url}/v1/token", API_KEY, client=shared)
    await streaming.fetch()
    await agent.fetch()
    await streaming.aclose()  # not its client: nothing is closed
    await agent.fetch()
    assert shared.created == 1
    assert len(set(token_server.peers)) == 1
    await shared.aclose()
    await streaming.fetch()  # a request after closing makes a new client
    assert shared.created == 2
    assert token_server.peers[-1] != token_server.peers[0]
    await shared.aclose()
