"""The process's TLS context: made only for TLS URLs, shared, and always verifying."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from appliance.cloud import tls
from appliance.cloud.rest import RestClient
from appliance.cloud.tokens import MintedTokens, SharedHttpClient, TokenTransientError
from appliance.secrets import Secret


def counting_contexts() -> tuple[tls.TlsContexts, list[ssl.SSLContext]]:
    made: list[ssl.SSLContext] = []

    def make() -> ssl.SSLContext:
        made.append(tls.make_verified_context())
        return made[-1]

    return tls.TlsContexts(make), made


def assert_verifying(ctx: ssl.SSLContext) -> None:
    assert ctx.check_hostname is True
    assert ctx.verify_mode == ssl.CERT_REQUIRED


def test_plain_urls_make_no_verified_context():
    contexts, made = counting_contexts()
    assert contexts.context_for("ws://127.0.0.1:8765/v3/ws") is None
    assert contexts.context_for("http://127.0.0.1:8765/v3/token") is None
    contexts.verify_for("http://127.0.0.1:8765")
    assert made == [] and contexts.made == 0


def test_tls_urls_share_one_verifying_context():
    contexts, made = counting_contexts()
    first = contexts.context_for("wss://streaming.assemblyai.com/v3/ws")
    assert first is not None
    assert contexts.verify_for("https://api.assemblyai.com") is first
    assert contexts.context_for("WSS://agents.assemblyai.com/v1/ws") is first
    assert made == [first] and contexts.made == 1
    assert_verifying(first)
    assert first.cert_store_stats()["x509_ca"] > 0  # a CA bundle is loaded


def test_a_client_for_a_plain_url_trusts_no_certificate():
    ctx = tls.TlsContexts().verify_for("http://127.0.0.1:8765")
    assert_verifying(ctx)
    assert ctx.cert_store_stats()["x509_ca"] == 0


@pytest.fixture
def self_signed_server_context(tmp_path: Path):
    """A server context with a self-signed certificate for 127.0.0.1 (trusted by nobody)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    return server_ctx


async def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx), 10
        )
        writer.close()
    finally:
        server.close()


@pytest.mark.parametrize("url", ["https://127.0.0.1", "http://127.0.0.1"])
async def test_an_untrusted_certificate_is_refused(self_signed_server_context, url):
    ctx = tls.TlsContexts().verify_for(url)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(ctx, self_signed_server_context)


async def test_http_clients_make_a_context_only_for_tls_and_share_it(monkeypatch):
    contexts, made = counting_contexts()
    monkeypatch.setattr(tls, "verify_for", contexts.verify_for)
    key = Secret("k" * 32)
    shared = SharedHttpClient()
    clients = [RestClient("http://127.0.0.1:1", key)]
    shared.client_for("http://127.0.0.1:1/v3/token")
    assert made == []
    clients += [RestClient("https://api.example.invalid", key)]
    shared.client_for("https://streaming.example.invalid/v3/token")
    shared.client_for("https://agents.example.invalid/v1/token")
    assert len(made) == 1
    assert shared.created == 2  # one plain client, one TLS client
    for client in clients:
        await client.aclose()
    await shared.aclose()


async def test_a_token_source_over_plain_http_makes_no_verified_context(monkeypatch):
    contexts, made = counting_contexts()
    monkeypatch.setattr(tls, "verify_for", contexts.verify_for)
    source = MintedTokens.streaming("http://127.0.0.1:9/v3/token", Secret("k" * 32))
    with pytest.raises(TokenTransientError):  # nothing listens there
        await source.fetch()
    await source.aclose()
    assert made == []
