"""Pre-recorded transcription over AssemblyAI's REST API (upload, submit, poll, subtitles).

One request per method, no hidden retries: each failure is raised already
classified (:class:`RateLimited` with the server's Retry-After, :class:`Transient`
for 5xx and network trouble, :class:`Permanent` for any other 4xx), and the
caller (the spool uploader) owns the retry policy, because only it knows
whether a retry is safe (see the submit rule in ``appliance.spool.uploader``).

The API key travels raw in ``Authorization`` (no ``Bearer``) and is revealed
only where that header is built. Uploads stream the body from an async
iterator of chunks with a declared Content-Length, never holding the file in
memory, under a write timeout sized for slow links.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from appliance.cloud import tls
from appliance.protocol.retry import (
    DEFAULT_RETRY_LIMITS,
    FailureGate,
    RetryLimits,
    parse_retry_after,
)
from appliance.secrets import Secret

if TYPE_CHECKING:
    import httpx

    from appliance.config import Config

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_WRITE_TIMEOUT = 120.0
DEFAULT_POOL_TIMEOUT = 10.0
# Polling a transcript: start at poll_seconds, grow by this factor, never beyond the cap.
POLL_GROWTH = 1.5
POLL_CAP_SECONDS = 30.0
# How many pages of the transcript list to search when reconciling a submit.
LIST_PAGES = 5
LIST_PAGE_SIZE = 200
MAX_ERROR_TEXT = 300
DEFAULT_SPEECH_MODELS = ("universal-3-pro", "universal-2")


class RestError(Exception):
    """A request to the pre-recorded API failed. ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Transient(RestError):
    """Worth retrying with backoff: 5xx, a timeout, a refused or dropped connection."""

    network = False  # True when the server was not reached at all (network down)


class NetworkDown(Transient):
    """The server could not be reached (DNS, connect refused, no route)."""

    network = True


class RateLimited(Transient):
    """429: wait ``retry_after`` seconds (from the server) before the next request."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message, 429)
        self.retry_after = retry_after


class Permanent(RestError):
    """Retrying the same request will not help (4xx other than 429, a malformed answer)."""


class AuthFailed(Permanent):
    """401/403: the key is wrong, disabled, or out of balance."""


class TranscriptError(Permanent):
    """The transcript ended in ``status: error``; ``message`` is the server's reason."""


@dataclasses.dataclass(frozen=True)
class RestTimeouts:
    """Timeouts per phase; the write timeout covers one chunk of an upload on a slow link."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT
    write: float = DEFAULT_WRITE_TIMEOUT
    pool: float = DEFAULT_POOL_TIMEOUT

    def httpx(self) -> httpx.Timeout:
        import httpx

        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


def transcript_request(upload_config: Any, audio_url: str) -> dict[str, Any]:
    """The POST /v2/transcript body for ``audio_url`` under the configured options."""
    body: dict[str, Any] = {
        "audio_url": audio_url,
        "speech_models": list(upload_config.speech_models or DEFAULT_SPEECH_MODELS),
    }
    if upload_config.speaker_labels:
        body["speaker_labels"] = True
    if upload_config.language_detection:
        body["language_detection"] = True
    if upload_config.language_code:
        body["language_code"] = upload_config.language_code
    if upload_config.keyterms_prompt:
        body["keyterms_prompt"] = list(upload_config.keyterms_prompt)
    if upload_config.redact_pii:
        body["redact_pii"] = True
        if upload_config.redact_pii_policies:
            body["redact_pii_policies"] = list(upload_config.redact_pii_policies)
    for key, value in (upload_config.extra or {}).items():
        if key != "audio_url":
            body[key] = value
    return body


def _retry_after(response: httpx.Response) -> float | None:
    """The server's Retry-After, unclamped: whoever waits on it clamps it."""
    return parse_retry_after(response.headers.get("retry-after"))


def _reason(response: httpx.Response) -> str:
    try:
        data = response.json()
        text = data.get("error") or data.get("message") or json.dumps(data)
    except (ValueError, AttributeError):
        text = response.text
    return str(text)[:MAX_ERROR_TEXT]


def raise_for_status(response: httpx.Response, what: str) -> None:
    """Raise the classified error for a non-2xx ``response``."""
    status = response.status_code
    if status < 300:
        return
    reason = _reason(response)
    if status == 429:
        raise RateLimited(f"{what}: rate limited (429): {reason}", _retry_after(response))
    if status >= 500 or status == 408:
        raise Transient(f"{what}: server error {status}: {reason}", status)
    if status in (401, 403):
        raise AuthFailed(f"{what}: not authorised ({status}): {reason}", status)
    raise Permanent(f"{what}: refused ({status}): {reason}", status)


class RestClient:
    """An httpx.AsyncClient bound to one REST base URL and API key."""

    def __init__(
        self,
        base_url: str,
        api_key: Secret,
        *,
        timeouts: RestTimeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryLimits = DEFAULT_RETRY_LIMITS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeouts = timeouts or RestTimeouts()
        self._api_key = api_key
        self._transport = transport
        # Made at the first request: httpx and its client cost 50-100 ms of a start-up
        # whose first upload, if any, comes later (every mode opens the uploader).
        self._http: httpx.AsyncClient | None = None
        #: Every request of this client waits out the last failure's floor or Retry-After.
        self.gate = FailureGate(retry)

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                base_url=self.base_url,
                headers={"Authorization": self._api_key.reveal()},
                timeout=self.timeouts.httpx(),
                transport=self._transport,
                follow_redirects=False,
                # The process's one TLS context, or none for a plain http:// base (emulator).
                verify=tls.verify_for(self.base_url),
            )
        return self._http

    @classmethod
    def from_config(cls, config: Config) -> RestClient:
        """With the key: AssemblyAI. Without it, behind a token broker: the broker's
        pre-recorded proxy (``endpoints.rest_url`` if set, else the broker's origin),
        with the device credential where the key would go."""
        timeouts = RestTimeouts(write=config.upload.write_timeout_seconds)
        if config.api_key is not None:
            return cls(config.urls.rest_url, config.api_key, timeouts=timeouts)
        broker = config.auth.token_broker
        if broker.url and config.broker_credential is not None:
            base = config.endpoints.rest_url
            if not base:
                parts = urlsplit(broker.url)
                base = f"{parts.scheme}://{parts.netloc}"
            return cls(base, config.broker_credential, timeouts=timeouts)
        raise Permanent("no API key configured for pre-recorded transcription")

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _request(self, method: str, path: str, what: str, **kw: Any) -> httpx.Response:
        import httpx

        await self._wait_for_gate()
        try:
            response = await self._client.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            self.gate.failed(time.monotonic())
            raise NetworkDown(f"{what}: cannot reach the server ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            self.gate.failed(time.monotonic())
            raise Transient(f"{what}: connection failed ({type(exc).__name__})") from None
        if response.status_code >= 400:
            self.gate.failed(time.monotonic(), _retry_after(response))
        raise_for_status(response, what)
        return response

    async def _wait_for_gate(self) -> None:
        wait = self.gate.wait_seconds(time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise Permanent(f"{what}: answer is not JSON", response.status_code) from None
        if not isinstance(data, dict):
            raise Permanent(f"{what}: answer is not a JSON object", response.status_code)
        return data

    # -- the API ---------------------------------------------------------------

    async def probe(self) -> None:
        """Cheap reachability check (any HTTP answer means the network is back)."""
        import httpx

        await self._wait_for_gate()
        try:
            await self._client.get("/v2/transcript", params={"limit": 1})
        except httpx.TransportError as exc:
            self.gate.failed(time.monotonic())
            raise NetworkDown(f"probe: cannot reach the server ({type(exc).__name__})") from None

    async def upload(
        self,
        chunks: AsyncIterable[bytes],
        size: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> str:
        """POST /v2/upload with the chunks as the raw body; return the upload URL."""

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            async for chunk in chunks:
                yield chunk
                sent += len(chunk)
                if progress is not None:
                    progress(sent, size)

        response = await self._request(
            "POST",
            "/v2/upload",
            "upload",
            content=body(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        url = self._json(response, "upload").get("upload_url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise Permanent("upload: answer has no usable upload_url")
        return url

    async def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v2/transcript; return the transcript object (``id``, ``status``)."""
        response = await self._request("POST", "/v2/transcript", "submit", json=body)
        data = self._json(response, "submit")
        if not isinstance(data.get("id"), str):
            raise Permanent("submit: answer has no transcript id")
        return data

    async def get_transcript(self, transcript_id: str) -> dict[str, Any]:
        response = await self._request("GET", f"/v2/transcript/{transcript_id}", "poll")
        return self._json(response, "poll")

    async def find_transcripts(self, audio_url: str) -> list[str] | None:
        """Ids of transcripts whose ``audio_url`` is ``audio_url`` (newest pages first).

        Used to reconcile a submit whose answer was lost. None when the server
        has no list endpoint (404/405): the caller then cannot know.
        """
        found: list[str] = []
        params: dict[str, Any] = {"limit": LIST_PAGE_SIZE}
        for _ in range(LIST_PAGES):
            try:
                response = await self._request("GET", "/v2/transcript", "list", params=params)
            except Permanent as exc:
                if exc.status in (404, 405):
                    return None
                raise
            data = self._json(response, "list")
            items = data.get("transcripts")
            if not isinstance(items, list):
                return None
            for item in items:
                if isinstance(item, dict) and item.get("audio_url") == audio_url:
                    tid = item.get("id")
                    if isinstance(tid, str):
                        found.append(tid)
            before = (data.get("page_details") or {}).get("prev_url")
            if not items or not before:
                break
            last_id = items[-1].get("id") if isinstance(items[-1], dict) else None
            if not isinstance(last_id, str):
                break
            params = {"limit": LIST_PAGE_SIZE, "before_id": last_id}
        return found

    async def subtitles(self, transcript_id: str, fmt: str) -> str:
        if fmt not in ("srt", "vtt"):
            raise ValueError(fmt)
        response = await self._request("GET", f"/v2/transcript/{transcript_id}/{fmt}", fmt)
        return response.text

    async def wait_for_completion(
        self,
        transcript_id: str,
        poll_seconds: float = 3.0,
        *,
        cap_seconds: float = POLL_CAP_SECONDS,
        on_status: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the transcript is completed (return it) or errored (TranscriptError).

        The interval starts at ``poll_seconds`` and grows to ``cap_seconds``.
        Request failures propagate, classified, for the caller's retry policy.
        """
        delay = poll_seconds
        while True:
            data = await self.get_transcript(transcript_id)
            status = data.get("status")
            if on_status is not None and isinstance(status, str):
                on_status(status)
            if status == "completed":
                return data
            if status == "error":
                reason = str(data.get("error") or "unknown error")[:MAX_ERROR_TEXT]
                raise TranscriptError(f"transcript failed: {reason}")
            if status not in ("queued", "processing"):
                raise Permanent(f"poll: unexpected status {str(status)[:40]!r}")
            await asyncio.sleep(delay)
            delay = min(cap_seconds, max(poll_seconds, delay * POLL_GROWTH))
