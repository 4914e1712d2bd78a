"""Temporary tokens for WebSocket sessions: one fresh, single-use token per connection.

AssemblyAI's temporary tokens are single-use: a connection (and every
reconnect) needs a new one, and a token reused is refused with close 1008.
So a session never keeps a token around: it asks a :class:`TokenSource` at
every connection attempt.

Two sources, one interface:

* :class:`MintedTokens`: the device holds the API key and mints tokens itself
  (``GET <token url>?expires_in_seconds=N&max_session_duration_seconds=M``).
  Streaming wants ``Authorization: <key>`` raw, the voice agent
  ``Authorization: Bearer <key>``; the two factories below set that.
* :class:`BrokerTokens`: the device holds only its own credential and asks the
  owner's token broker (``Authorization: Bearer <credential>``, answer
  ``{"token": ...}``), so a fleet never stores the AssemblyAI key. Each request
  also carries the device's :class:`CheckIn` (version, spool backlog, last
  error) as ``X-Appliance-*`` headers, so the owner sees the fleet's state.

Both make their requests through one long-lived HTTP client
(:class:`SharedHttpClient`, made on first use): the daemon gives every source
the same one and closes it on shutdown; a source given none keeps its own
(closed by its ``aclose()``). Its TLS context is the process's shared one
(:mod:`appliance.cloud.tls`), made only if a token URL is ``https://``. That
client is :class:`appliance.cloud.token_http.TokenHttpClient` (asyncio and
h11), not httpx, which would stay resident (about 7 MB) in every mode that
mints tokens; a source still takes an ``httpx.AsyncClient`` if given one.

:class:`appliance.connection.tokens.TokenCoordinator` wraps either: it keeps
a token ready (so a press costs no round trip), makes one request at a time and
spaces retries after a failure.

Failures are classified so callers can react sensibly: :class:`TokenAuthError`
(401/403, the credential is wrong: retry slowly, tell the user) versus
:class:`TokenTransientError` (network, timeout, 5xx, 429 with ``Retry-After``:
retry with backoff). Every token is registered with ``register_token`` (for as
long as the service may accept it) before it leaves this module, and no
exception text ever contains a token or a key.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, Unpack, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from appliance import __version__
from appliance.cloud import tls
from appliance.cloud.token_http import (
    HttpAnswer,
    HttpRequestError,
    HttpTimeout,
    PhaseTimeouts,
    TokenHttpClient,
)
from appliance.protocol.retry import parse_retry_after
from appliance.secrets import Secret, redact, register_token

if TYPE_CHECKING:
    # Imported at the first request: httpx costs 50-100 ms of a start-up that mints
    # its first token only after READY=1.
    import httpx

log = logging.getLogger(__name__)

TokenKind = Literal["streaming", "agent"]

#: Explicit timeouts for token requests (seconds): a press must not hang on a dead network.
DEFAULT_TIMEOUTS = {"connect": 3.0, "read": 5.0, "write": 5.0, "pool": 2.0}


def default_timeout() -> httpx.Timeout:
    """:data:`DEFAULT_TIMEOUTS` as the ``httpx.Timeout`` every token request uses."""
    import httpx

    return httpx.Timeout(**DEFAULT_TIMEOUTS)


#: How long a broker's token is assumed to stay redeemable when it does not say.
DEFAULT_BROKER_TOKEN_LIFETIME_SECONDS = 60.0
#: Bounds the documented API puts on the minting parameters.
EXPIRES_IN_RANGE = (1, 600)
MAX_SESSION_RANGE = (60, 10800)
#: How many issued-token fingerprints are remembered to detect a repeated token.
_SEEN_LIMIT = 4096
#: Longest last-error text a check-in sends (the broker keeps at most 200 characters).
CHECKIN_ERROR_CHARS = 200


class TokenError(Exception):
    """A token could not be obtained. Messages never contain a token or a key."""


class TokenAuthError(TokenError):
    """The credential was refused (401/403): retrying quickly will not help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class TokenTransientError(TokenError):
    """Network trouble, a timeout, 5xx or 429: retry later (``retry_after`` if given)."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@runtime_checkable
class TokenSource(Protocol):
    """Gives a fresh single-use token for one WebSocket connection."""

    async def fetch(self) -> Secret:
        """A token never handed out before; raises :class:`TokenError`."""
        ...


def _safe_url(url: str) -> str:
    """The URL without its query, for messages (a broker URL might carry a credential)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment=""))


def _retry_after(response: httpx.Response | HttpAnswer) -> float | None:
    """The server's Retry-After, unclamped (whoever sleeps on it clamps it)."""
    # httpx's headers match any case; an HttpAnswer's names are lower-cased.
    return parse_retry_after(response.headers.get("retry-after"))


class SharedHttpClient:
    """One long-lived :class:`TokenHttpClient` for token requests, made on first use.

    Building a client costs tens of milliseconds of CPU (mostly its SSL
    context), and a fresh client also means a fresh TCP (and TLS) connection:
    a token per WebSocket connection must not pay that each time. Token
    sources given the same holder share one client and its kept-alive
    connections. ``aclose()`` closes it (on shutdown); a later request makes a
    new one. Use it from one event loop.

    The client uses the process's shared TLS context, and none for plain
    ``http://`` token URLs (the emulator): see :mod:`appliance.cloud.tls`. Were
    a configuration to mix plain and TLS token URLs, each kind gets its own client.
    """

    def __init__(self, timeout: httpx.Timeout | None = None) -> None:
        self._timeout = timeout
        self._clients: dict[bool, TokenHttpClient] = {}  # by "needs TLS"
        self.created = 0  # clients made so far (one, unless closed and used again)

    @property
    def timeouts(self) -> PhaseTimeouts:
        """Per-phase timeouts of its requests: the given ones, else :data:`DEFAULT_TIMEOUTS`."""
        if self._timeout is not None:
            return PhaseTimeouts.of(self._timeout)
        t = DEFAULT_TIMEOUTS
        return PhaseTimeouts(connect=t["connect"], read=t["read"], write=t["write"])

    def client_for(self, url: str) -> TokenHttpClient:
        """The client for requests to ``url``, made on first use."""
        secure = tls.needs_tls(url)
        client = self._clients.get(secure)
        if client is None or client.is_closed:
            if secure:
                tls.verify_for(url)  # the shared context, made now rather than at a press
            client = TokenHttpClient(user_agent=f"appliance/{__version__}")
            self._clients[secure] = client
            self.created += 1
        return client

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()


class CheckIn:
    """What the device tells its broker with every token request.

    ``observe`` is an event-bus callback: it keeps the spool's backlog and the
    last error reported (redacted, one line of ASCII, cut to
    ``CHECKIN_ERROR_CHARS``) for the next request's headers.
    """

    def __init__(self, version: str = __version__) -> None:
        self.version = version
        self.spool_backlog: int | None = None
        self.last_error: str | None = None

    def observe(self, published: object) -> None:
        event = getattr(published, "event", published)
        kind = getattr(event, "kind", None)
        if kind == "spool":
            waiting = getattr(event, "waiting", None)
            self.spool_backlog = waiting if isinstance(waiting, int) else None
        elif kind == "error":
            message = str(getattr(event, "message", ""))
            line = " ".join(redact(message).split())
            self.last_error = line.encode("ascii", "replace").decode()[:CHECKIN_ERROR_CHARS]

    def headers(self) -> dict[str, str]:
        out = {"X-Appliance-Version": self.version}
        if self.spool_backlog is not None:
            out["X-Appliance-Spool-Backlog"] = str(self.spool_backlog)
        if self.last_error:
            out["X-Appliance-Last-Error"] = self.last_error
        return out


class _HttpTokenSource:
    """Shared GET-a-token logic: classification, uniqueness, registration."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        params: dict[str, str],
        *,
        lifetime_seconds: float,
        client: httpx.AsyncClient | SharedHttpClient | None,
        timeout: httpx.Timeout | None,
        redeemable_seconds: float | None = None,
    ) -> None:
        self.url = url
        self._headers = headers
        self._params = params
        self.lifetime_seconds = lifetime_seconds
        # How long log redaction keeps a token: the longest the service may accept it.
        self.redeemable_seconds = max(lifetime_seconds, redeemable_seconds or 0.0)
        # Without a client, this source keeps its own long-lived one (closed by aclose()).
        self._owns_client = client is None
        self._client = client if client is not None else SharedHttpClient(timeout)
        self._timeout = timeout
        self._seen: dict[bytes, None] = {}
        self.fetched = 0

    async def aclose(self) -> None:
        """Close the HTTP client if this source made it (a shared one is its owner's)."""
        if self._owns_client and isinstance(self._client, SharedHttpClient):
            await self._client.aclose()

    def _extra_headers(self) -> dict[str, str]:
        return {}

    async def fetch(self) -> Secret:
        where = _safe_url(self.url)
        holder = self._client
        headers = {**self._headers, **self._extra_headers()}
        response: httpx.Response | HttpAnswer
        if isinstance(holder, SharedHttpClient):
            timeouts = PhaseTimeouts.of(self._timeout) if self._timeout else holder.timeouts
            try:
                response = await holder.client_for(self.url).get(
                    self.url, params=self._params, headers=headers, timeouts=timeouts
                )
            except HttpTimeout:
                raise TokenTransientError(f"token request to {where} timed out") from None
            except HttpRequestError as exc:
                raise TokenTransientError(f"token request to {where} failed ({exc})") from None
        else:
            response = await self._fetch_with_httpx(holder, headers, where)
        return self._token_from(response, where)

    async def _fetch_with_httpx(
        self, client: httpx.AsyncClient, headers: dict[str, str], where: str
    ) -> httpx.Response:
        """The request through an ``httpx.AsyncClient`` a caller gave."""
        import httpx

        try:
            return await client.get(
                self.url,
                params=self._params,
                headers=headers,
                timeout=self._timeout or default_timeout(),
            )
        except httpx.TimeoutException as exc:
            raise TokenTransientError(
                f"token request to {where} timed out ({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:
            raise TokenTransientError(
                f"token request to {where} failed ({type(exc).__name__})"
            ) from None

    def _token_from(self, response: httpx.Response | HttpAnswer, where: str) -> Secret:
        """The answer classified; its token, registered for redaction and never seen before."""
        status = response.status_code
        if status in (401, 403):
            raise TokenAuthError(f"token request to {where} refused: HTTP {status}", status)
        if status == 429 or status >= 500:
            raise TokenTransientError(
                f"token request to {where} answered HTTP {status}",
                status=status,
                retry_after=_retry_after(response),
            )
        if status != 200:
            # 400 and friends: our request is wrong; retrying the same request is pointless,
            # but a config fix or a broker fix may cure it, so callers retry slowly.
            raise TokenError(f"token request to {where} answered HTTP {status}")
        try:
            body = response.json()
            value = body["token"]
        except (ValueError, KeyError, TypeError):
            raise TokenTransientError(
                f"token answer from {where} has no token field", status=status
            ) from None
        if not isinstance(value, str) or not value:
            raise TokenTransientError(f"token answer from {where} has an empty token")
        secret = register_token(
            Secret(value, source=f"token from {where}"), self.redeemable_seconds
        )
        digest = hashlib.sha256(value.encode()).digest()
        if digest in self._seen:
            raise TokenError(f"{where} returned a token it had handed out before; not reusing it")
        self._seen[digest] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.pop(next(iter(self._seen)))
        self.fetched += 1
        return secret


class MintOptions(TypedDict, total=False):
    """The keyword options of :class:`MintedTokens` besides ``bearer``."""

    expires_in_seconds: int
    max_session_duration_seconds: int | None
    client: httpx.AsyncClient | SharedHttpClient | None
    timeout: httpx.Timeout | None


class MintedTokens(_HttpTokenSource):
    """Mints temporary tokens with the API key held on the device."""

    def __init__(
        self,
        url: str,
        api_key: Secret,
        *,
        bearer: bool,
        expires_in_seconds: int = 600,
        max_session_duration_seconds: int | None = None,
        client: httpx.AsyncClient | SharedHttpClient | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        low, high = EXPIRES_IN_RANGE
        if not low <= expires_in_seconds <= high:
            raise ValueError(f"expires_in_seconds must be in {low}..{high}")
        params = {"expires_in_seconds": str(int(expires_in_seconds))}
        if max_session_duration_seconds is not None:
            low, high = MAX_SESSION_RANGE
            clamped = min(high, max(low, int(max_session_duration_seconds)))
            params["max_session_duration_seconds"] = str(clamped)
        key = api_key.reveal()
        header = f"Bearer {key}" if bearer else key
        super().__init__(
            url,
            {"Authorization": header},
            params,
            lifetime_seconds=float(expires_in_seconds),
            client=client,
            timeout=timeout,
        )

    @classmethod
    def streaming(cls, url: str, api_key: Secret, **kwargs: Unpack[MintOptions]) -> MintedTokens:
        """Universal Streaming v3 tokens: ``Authorization: <key>`` (no Bearer)."""
        return cls(url, api_key, bearer=False, **kwargs)

    @classmethod
    def agent(cls, url: str, api_key: Secret, **kwargs: Unpack[MintOptions]) -> MintedTokens:
        """Voice Agent tokens: ``Authorization: Bearer <key>``."""
        return cls(url, api_key, bearer=True, **kwargs)


class BrokerTokens(_HttpTokenSource):
    """Asks the owner's token broker; the device never holds the AssemblyAI key.

    The request is ``GET <url>?kind=streaming|agent`` with
    ``Authorization: Bearer <device credential>``; the answer is ``{"token": ...}``.
    """

    def __init__(
        self,
        url: str,
        credential: Secret,
        *,
        kind: TokenKind = "streaming",
        lifetime_seconds: float = DEFAULT_BROKER_TOKEN_LIFETIME_SECONDS,
        client: httpx.AsyncClient | SharedHttpClient | None = None,
        timeout: httpx.Timeout | None = None,
        checkin: CheckIn | None = None,
    ) -> None:
        self.checkin = checkin if checkin is not None else CheckIn()
        super().__init__(
            url,
            {"Authorization": f"Bearer {credential.reveal()}"},
            {"kind": kind},
            lifetime_seconds=lifetime_seconds,
            client=client,
            timeout=timeout,
            # The broker does not say how long its token lives: the longest the API allows.
            redeemable_seconds=float(EXPIRES_IN_RANGE[1]),
        )

    def _extra_headers(self) -> dict[str, str]:
        return self.checkin.headers()


def token_source_for(
    config: object,
    kind: TokenKind,
    *,
    max_session_seconds: float | None = None,
    client: SharedHttpClient | httpx.AsyncClient | None = None,
    checkin: CheckIn | None = None,
) -> TokenSource:
    """The token source a config asks for: the owner's broker if set, else local minting.

    ``config`` is an :class:`appliance.config.Config`. Pass one ``client`` to
    every source so they share one HTTP client (closed by whoever made it), and
    one ``checkin`` fed by the event bus (without it a broker hears the version only).
    """
    from appliance.config import Config  # local import keeps this module light

    assert isinstance(config, Config)
    broker = config.auth.token_broker
    if broker.url:
        if config.broker_credential is None:
            raise TokenAuthError("the token-broker credential is not set", 0)
        return BrokerTokens(
            broker.url, config.broker_credential, kind=kind, client=client, checkin=checkin
        )
    if config.api_key is None:
        raise TokenAuthError("the AssemblyAI API key is not set", 0)
    urls = config.urls
    max_session = None if max_session_seconds is None else round(max_session_seconds)
    if kind == "streaming":
        return MintedTokens.streaming(
            urls.streaming_token_url,
            config.api_key,
            expires_in_seconds=config.live.token_expires_seconds,
            max_session_duration_seconds=max_session,
            client=client,
        )
    return MintedTokens.agent(
        urls.agent_token_url,
        config.api_key,
        expires_in_seconds=config.agent.token_expires_seconds,
        max_session_duration_seconds=max_session,
        client=client,
    )
