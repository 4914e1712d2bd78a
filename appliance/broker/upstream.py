"""Minting at AssemblyAI with the key, behind a failure gate.

Streaming tokens come from ``/v3/token`` with ``Authorization: <key>`` (raw),
agent tokens from ``/v1/token`` with ``Authorization: Bearer <key>``; both
take ``expires_in_seconds`` and ``max_session_duration_seconds``. Every
device request makes exactly one upstream request and hands its token to that
device only: nothing is cached, and a token the endpoint repeats (it should never)
is refused, so no token is ever handed out twice.

When the token endpoint fails (network, timeout, 5xx, 429, a malformed
answer), the broker does not retry: it answers 503 with ``Retry-After`` and
the :class:`UpstreamGate` keeps every further request from going upstream
until the backoff has passed (doubling per consecutive failure, capped, or
longer if AssemblyAI said ``Retry-After``). A fleet reconnecting at once thus
costs AssemblyAI one failed request per backoff, not one per device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Literal

import httpx

from appliance.broker.limits import EXPIRES_IN_RANGE, MAX_SESSION_RANGE, Limits
from appliance.protocol.retry import parse_retry_after
from appliance.secrets import Secret, redact

log = logging.getLogger(__name__)

Kind = Literal["streaming", "agent"]
KINDS: tuple[Kind, ...] = ("streaming", "agent")
#: Fingerprints of this many recent tokens are kept, so a token repeated by the
#: endpoint is never handed to a second device.
SEEN_LIMIT = 10_000
#: Longest Retry-After from AssemblyAI the gate honours.
MAX_UPSTREAM_RETRY_AFTER = 300.0


class UpstreamError(Exception):
    """AssemblyAI's token endpoint failed; ``retry_after`` is when to come back (seconds)."""

    def __init__(
        self, message: str, retry_after: float, status: int | None = None, *, gated: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status
        self.gated = gated  # refused by the gate: nothing went upstream


class UpstreamGate:
    """After a failure, no request goes upstream until the backoff has passed. Pure."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self.not_before = 0.0

    def wait(self, now: float) -> float:
        """Seconds until an upstream request may go (0.0: now)."""
        return max(0.0, self.not_before - now)

    def failed(self, now: float, server_retry_after: float | None = None) -> float:
        """Note a failure; returns the seconds until the next attempt."""
        if self.not_before > now:  # requests in flight together fail together: one failure
            return self.not_before - now
        self.failures += 1
        delay: float = min(self.cap, self.base * 2.0 ** min(self.failures - 1, 32))
        if server_retry_after is not None:
            delay = max(delay, min(server_retry_after, MAX_UPSTREAM_RETRY_AFTER))
        self.not_before = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0


@dataclasses.dataclass(frozen=True)
class UpstreamUrls:
    streaming: str
    agent: str
    rest: str = "https://api.assemblyai.com"


def clamp(value: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return min(high, max(low, int(value)))


class Minter:
    """One token per call, from the endpoint of its kind, through one long-lived client."""

    def __init__(
        self,
        urls: UpstreamUrls,
        key: Secret,
        limits: Limits,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.urls = urls
        self._key = key
        self.limits = limits
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(limits.upstream_timeout_seconds)
        )
        self.gates = {kind: self._gate() for kind in KINDS}
        self._seen: dict[bytes, None] = {}  # fingerprints of the tokens handed out lately

    def _gate(self) -> UpstreamGate:
        return UpstreamGate(
            self.limits.upstream_backoff_seconds, self.limits.upstream_backoff_cap_seconds
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def mint(self, kind: Kind, max_session_seconds: int, now: float) -> Secret:
        """A fresh token; raises :class:`UpstreamError` (already gated) on any failure."""
        gate = self.gates[kind]
        wait = gate.wait(now)
        if wait > 0:
            raise UpstreamError(f"{kind} token endpoint backing off", wait, gated=True)
        key = self._key.reveal()
        url = self.urls.streaming if kind == "streaming" else self.urls.agent
        headers = {"Authorization": key if kind == "streaming" else f"Bearer {key}"}
        params = {
            "expires_in_seconds": str(clamp(self.limits.token_expires_seconds, EXPIRES_IN_RANGE)),
            "max_session_duration_seconds": str(clamp(max_session_seconds, MAX_SESSION_RANGE)),
        }
        try:
            response = await self._client.get(url, params=params, headers=headers)
        except httpx.HTTPError as exc:
            delay = gate.failed(now)
            raise UpstreamError(
                redact(f"{kind} token request failed ({type(exc).__name__})"), delay
            ) from None
        status = response.status_code
        if status != 200:
            server = parse_retry_after(response.headers.get("Retry-After"))
            delay = gate.failed(now, server)
            raise UpstreamError(f"{kind} token endpoint answered HTTP {status}", delay, status)
        try:
            value = response.json()["token"]
        except (ValueError, KeyError, TypeError):
            value = None
        if not isinstance(value, str) or not value:
            delay = gate.failed(now)
            raise UpstreamError(f"{kind} token answer has no token", delay, status)
        digest = hashlib.sha256(value.encode()).digest()
        if digest in self._seen:
            delay = gate.failed(now)
            raise UpstreamError(
                f"{kind} token endpoint repeated a token; not handing it out", delay, status
            )
        self._seen[digest] = None
        if len(self._seen) > SEEN_LIMIT:
            self._seen.pop(next(iter(self._seen)))
        gate.succeeded()
        return Secret(value, source=f"{kind} token")
