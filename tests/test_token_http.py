"""The token GET client (asyncio + h11) against raw HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from appliance.cloud.token_http import (
    MAX_ANSWER_BYTES,
    HttpRequestError,
    HttpTimeout,
    PhaseTimeouts,
    TokenHttpClient,
)

TIMEOUTS = PhaseTimeouts(connect=5.0, read=5.0, write=5.0)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def answer(body: bytes, *extra: str) -> bytes:
    head = [
        "HTTP/1.1 200 OK",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_request(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


class Server:
    """A raw TCP server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        listening = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(listening)
        server.url = f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}/v3/token"
        return server

    yield start
    for listening in servers:
        listening.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused(serve) -> None:
    closed = asyncio.Event()

    async def one_answer_then_close(reader, writer) -> None:
        server.requests.append(await read_request(reader))
        writer.write(answer(b'{"token": "t"}'))  # no "Connection: close": looks reusable
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        closed.set()

    server = await serve(one_answer_then_close)
    client = TokenHttpClient()
    for _ in range(3):
        closed.clear()
        got = await client.get(server.url, params={}, headers={}, timeouts=TIMEOUTS)
        assert got.json() == {"token": "t"}
        await closed.wait()
        await asyncio.sleep(0.1)  # the client's loop reads the end of the stream
    assert server.connections == 3 and len(server.requests) == 3
    await client.aclose()


async def test_a_request_the_server_dropped_is_a_failure_and_not_sent_again(serve) -> None:
    async def answer_once_then_drop(reader, writer) -> None:
        server.requests.append(await read_request(reader))
        writer.write(answer(b'{"token": "t"}'))
        await writer.drain()
        server.requests.append(await read_request(reader))  # the second: no answer

    server = await serve(answer_once_then_drop)
    client = TokenHttpClient()
    await client.get(server.url, params={}, headers={}, timeouts=TIMEOUTS)
    with pytest.raises(HttpRequestError):
        await client.get(server.url, params={}, headers={}, timeouts=TIMEOUTS)
    # Sent once: the server saw it fail, and a retry at once would break the retry rules.
    assert server.connections == 1 and len(server.requests) == 2
    await client.aclose()


async def test_answers_on_one_connection_reuse_it(serve) -> None:
    async def keep_alive(reader, writer) -> None:
        while True:
            server.requests.append(await read_request(reader))
            writer.write(answer(b'{"token": "t"}'))
            await writer.drain()

    server = await serve(keep_alive)
    client = TokenHttpClient()
    for _ in range(3):
        await client.get(server.url, params={"a": "1"}, headers={}, timeouts=TIMEOUTS)
    assert server.connections == 1 and len(server.requests) == 3
    assert server.requests[0].startswith(b"GET /v3/token?a=1 HTTP/1.1\r\n")
    await client.aclose()


async def test_a_chunked_answer_is_read_whole_and_headers_are_lower_cased(serve) -> None:
    async def chunked(reader, writer) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"tok\r\n9\r\nen": "t"}\r\n0\r\n\r\n'
        )
        await writer.drain()

    server = await serve(chunked)
    client = TokenHttpClient()
    got = await client.get(server.url, params={}, headers={}, timeouts=TIMEOUTS)
    assert got.status_code == 429 and got.headers["retry-after"] == "7"
    assert got.json() == {"token": "t"}
    await client.aclose()


async def test_an_answer_longer_than_a_token_answer_is_refused(serve) -> None:
    async def huge(reader, writer) -> None:
        await read_request(reader)
        writer.write(answer(b"x" * (MAX_ANSWER_BYTES + 1)))
        await writer.drain()

    server = await serve(huge)
    client = TokenHttpClient()
    with pytest.raises(HttpRequestError, match="longer than"):
        await client.get(server.url, params={}, headers={}, timeouts=TIMEOUTS)
    await client.aclose()


async def test_a_server_that_never_answers_is_a_timeout(serve) -> None:
    async def silent(reader, writer) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    server = await serve(silent)
    client = TokenHttpClient()
    with pytest.raises(HttpTimeout):
        await client.get(server.url, params={}, headers={}, timeouts=PhaseTimeouts(5.0, 0.2, 5.0))
    await client.aclose()


async def test_an_answer_cut_short_is_a_failure_not_a_token(serve) -> None:
    async def cut(reader, writer) -> None:
        await read_request(reader)
        writer.write(answer(b'{"token": "t"}')[:-4])
        await writer.drain()

    server = await serve(cut)
    client = TokenHttpClient()
    with pytest.raises(HttpRequestError):
        await client.get(server.url, params={}, headers={}, timeouts=TIMEOUTS)
    await client.aclose()


def test_minting_a_token_through_the_shared_client_imports_no_httpx() -> None:
    code = """
import asyncio, sys
from appliance.cloud.tokens import MintedTokens, SharedHttpClient
from appliance.secrets import Secret

async def main():
    async def serve(reader, writer):
        await reader.readuntil(b"\\r\\n\\r\\n")
        body = b'{"token": "tok-123456789"}'
        writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    shared = SharedHttpClient()
    source = MintedTokens.streaming(
        f"http://127.0.0.1:{port}/v3/token", Secret("k" * 32), client=shared
    )
    token = await source.fetch()
    await shared.aclose()
    server.close()
    print(token.reveal(), "httpx" in sys.modules)

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["tok-123456789", "False"]


def test_the_token_sources_load_no_h11_before_their_first_request() -> None:
    code = (
        "import sys\n"
        "from appliance.cloud.tokens import MintedTokens, SharedHttpClient\n"
        "from appliance.secrets import Secret\n"
        "MintedTokens.streaming('http://127.0.0.1:9/v3/token', Secret('k' * 32),"
        " client=SharedHttpClient())\n"
        "print('h11' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["False"]  # record mode mints no token and never needs the parser


async def test_an_https_token_url_is_asked_over_verified_tls(tmp_path, monkeypatch) -> None:
    import ssl

    from appliance.cloud import tls

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
    trusting = ssl.create_default_context(cafile=str(cert))  # trusts this server only
    monkeypatch.setattr(tls, "verify_for", lambda url: trusting)

    async def serve(reader, writer) -> None:
        await read_request(reader)
        writer.write(answer(b'{"token": "t"}'))
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    url = f"https://127.0.0.1:{listening.sockets[0].getsockname()[1]}/v3/token"
    client = TokenHttpClient()
    try:
        got = await client.get(url, params={}, headers={}, timeouts=TIMEOUTS)
        assert got.json() == {"token": "t"}
        monkeypatch.setattr(tls, "verify_for", lambda url: ssl.create_default_context())
        with pytest.raises(HttpRequestError, match="SSLCertVerificationError"):
            await TokenHttpClient().get(url, params={}, headers={}, timeouts=TIMEOUTS)
    finally:
        await client.aclose()
        listening.close()
