"""The HTTP client token requests use: GET over asyncio streams, parsed by h11.

A press needs one small GET (``/v3/token``, ``/v1/token`` or the broker's
endpoint) and nothing else of HTTP. httpx and httpcore (with anyio, idna and
``urllib.request``) keep about 7 MB resident once imported, which live and agent
modes would otherwise carry for their whole life just to mint tokens; h11 (the
sans-I/O HTTP/1.1 parser httpcore itself is built on) costs a third of a MB.
The REST client (uploads, summaries) still uses httpx, imported when it first
sends.

One kept-alive connection per origin, reused by the next token unless the
server has closed it meanwhile (seen before anything is sent, as httpcore
does). A request that fails is never sent again here: the server may have
seen it fail, and retrying at once breaks the retry rules; the token
coordinator's backoff decides when to ask again. Timeouts are per phase, like
httpx's: connect, each write, each read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from appliance.cloud import tls

if TYPE_CHECKING:
    # Imported at the first request: record mode, which mints no token, never needs it.
    import h11

#: A token answer is about a hundred bytes; anything past this is not one.
MAX_ANSWER_BYTES = 64 * 1024
#: Bytes asked of the socket per read.
READ_CHUNK_BYTES = 16 * 1024


class HttpRequestError(Exception):
    """The request got no complete answer (connection, TLS or protocol failure)."""


class HttpTimeout(HttpRequestError):
    """A phase (connect, write, read) took longer than its timeout."""


@dataclass(frozen=True)
class PhaseTimeouts:
    """Seconds allowed per phase; ``read`` is per read, not for the whole answer."""

    connect: float
    read: float
    write: float

    @classmethod
    def of(cls, timeout: Any) -> PhaseTimeouts:
        """From anything with httpx.Timeout's ``connect``/``read``/``write`` attributes."""
        return cls(float(timeout.connect), float(timeout.read), float(timeout.write))


@dataclass(frozen=True)
class HttpAnswer:
    """Status, headers (names lower-cased) and body of one answer."""

    status_code: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body)


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection


class TokenHttpClient:
    """GET requests with one kept-alive connection per origin. Use from one event loop."""

    def __init__(self, user_agent: str = "appliance") -> None:
        self._user_agent = user_agent
        self._idle: dict[tuple[str, str, int], _Connection] = {}
        self.is_closed = False

    async def get(
        self,
        url: str,
        *,
        params: dict[str, str],
        headers: dict[str, str],
        timeouts: PhaseTimeouts,
    ) -> HttpAnswer:
        """One GET of ``url`` with ``params`` added to its query."""
        import h11

        if self.is_closed:
            raise HttpRequestError("client closed")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise HttpRequestError(f"not an http(s) URL (scheme {scheme!r})")
        secure = scheme == "https"
        port = parts.port or (443 if secure else 80)
        origin = (scheme, parts.hostname, port)
        target = parts.path or "/"
        query = "&".join(q for q in (parts.query, urlencode(params)) if q)
        if query:
            target += "?" + query
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port is not None:
            host += f":{parts.port}"
        request = h11.Request(
            method="GET",
            target=target,
            headers=[
                ("Host", host),
                ("User-Agent", self._user_agent),
                ("Accept", "application/json"),
                *headers.items(),
            ],
        )
        conn = self._idle.pop(origin, None)
        if conn is not None and not _reusable(conn):
            await _close(conn)
            conn = None
        if conn is None:
            context = tls.verify_for(url) if secure else None
            conn = await self._connect(parts.hostname, port, context, timeouts)
        return await self._exchange(origin, conn, request, timeouts)

    async def aclose(self) -> None:
        """Close the kept connections; a later request opens new ones."""
        idle, self._idle = self._idle, {}
        for conn in idle.values():
            await _close(conn)

    @staticmethod
    async def _connect(
        host: str, port: int, context: ssl.SSLContext | None, timeouts: PhaseTimeouts
    ) -> _Connection:
        import h11

        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None
                ),
                timeouts.connect,
            )
        except TimeoutError:
            raise HttpTimeout("connect timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise HttpRequestError(f"connect failed ({type(exc).__name__})") from None
        return _Connection(reader, writer, h11.Connection(h11.CLIENT))

    async def _exchange(
        self,
        origin: tuple[str, str, int],
        conn: _Connection,
        request: h11.Request,
        timeouts: PhaseTimeouts,
    ) -> HttpAnswer:
        import h11

        try:
            conn.writer.write(conn.h11.send(request) + conn.h11.send(h11.EndOfMessage()))
            await asyncio.wait_for(conn.writer.drain(), timeouts.write)
            status, headers, body = 0, {}, bytearray()
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    data = await asyncio.wait_for(conn.reader.read(READ_CHUNK_BYTES), timeouts.read)
                    conn.h11.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > MAX_ANSWER_BYTES:
                        raise HttpRequestError(f"answer longer than {MAX_ANSWER_BYTES} bytes")
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise HttpRequestError("connection closed before the answer ended")
                # InformationalResponse (1xx): the real answer follows.
        except BaseException as exc:
            await _close(conn)
            if isinstance(exc, TimeoutError):
                raise HttpTimeout("read or write timed out") from None
            if isinstance(exc, HttpRequestError):
                raise
            if isinstance(exc, (OSError, ssl.SSLError, h11.ProtocolError)):
                raise HttpRequestError(f"request failed ({type(exc).__name__})") from None
            raise
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            stale = self._idle.pop(origin, None)
            self._idle[origin] = conn
            if stale is not None:
                await _close(stale)
        else:
            await _close(conn)
        return HttpAnswer(status, headers, bytes(body))


def _reusable(conn: _Connection) -> bool:
    """Still open on both ends with nothing unasked-for waiting: the server has not closed it."""
    # Bytes waiting on an idle connection are the server's last words before closing (a
    # 408, say), not an answer to the next request. StreamReader keeps them in _buffer.
    waiting = len(getattr(conn.reader, "_buffer", b""))
    return not (conn.writer.is_closing() or conn.reader.at_eof() or waiting)


async def _close(conn: _Connection) -> None:
    conn.writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
        await asyncio.wait_for(conn.writer.wait_closed(), 1.0)
