"""The pre-recorded API through the broker, so a field recorder needs no key either.

AssemblyAI has temporary tokens for its WebSocket APIs only; uploads and
transcripts (``/v2/upload``, ``/v2/transcript``) take the key itself. So the
broker forwards exactly the requests the device's uploader makes, after
checking the device's credential (sent where the key would go), with the key
put in: ``POST /v2/upload`` (streamed through, never held in memory),
``POST /v2/transcript``, ``GET /v2/transcript`` (the list, for reconciling a
submit) and ``GET /v2/transcript/<id>[/srt|/vtt]``. Anything else is 404.
Answers are passed back as they came (status, ``Retry-After``, body).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import httpx

from appliance.broker.limits import Limits
from appliance.secrets import Secret

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ALLOWED = (
    ("POST", re.compile(r"/v2/upload")),
    ("POST", re.compile(r"/v2/transcript")),
    ("GET", re.compile(r"/v2/transcript")),
    ("GET", re.compile(r"/v2/transcript/[A-Za-z0-9_-]{1,100}(?:/(?:srt|vtt))?")),
)
#: Request headers passed upstream; everything else (cookies, the device credential) is not.
_FORWARDED_REQUEST = ("content-type", "content-length")
_FORWARDED_RESPONSE = ("content-type", "retry-after")


def allowed(method: str, path: str) -> bool:
    return any(m == method and rx.fullmatch(path) for m, rx in _ALLOWED)


class RestProxy:
    """Forwards one allowed request to the pre-recorded API with the key."""

    def __init__(self, base_url: str, key: Secret, limits: Limits) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.limits = limits
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=limits.rest_connect_timeout_seconds,
                read=limits.rest_read_timeout_seconds,
                write=limits.rest_write_timeout_seconds,
                pool=limits.rest_connect_timeout_seconds,
            ),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def forward(
        self,
        method: str,
        path: str,
        query: bytes,
        headers: Mapping[str, str],
        receive: Receive,
        send: Send,
    ) -> int:
        """Send the request on and stream the answer back; the status sent (502 if none)."""

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        out = {k: v for k, v in headers.items() if k in _FORWARDED_REQUEST}
        out["authorization"] = self._key.reveal()
        url = f"{self.base_url}{path}" + (f"?{query.decode('latin-1')}" if query else "")
        content = body() if method == "POST" else None
        request = self._client.build_request(method, url, headers=out, content=content)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError:
            await _answer(
                send,
                502,
                b'{"error": "pre-recorded API unreachable"}',
                {"content-type": "application/json", "retry-after": "5"},
            )
            return 502
        try:
            passed = {k: v for k, v in response.headers.items() if k.lower() in _FORWARDED_RESPONSE}
            raw = [(k.encode(), v.encode()) for k, v in passed.items()]
            raw.append((b"cache-control", b"no-store"))
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": raw}
            )
            async for chunk in response.aiter_bytes():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.HTTPError:
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()
        return response.status_code


async def _answer(send: Send, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
