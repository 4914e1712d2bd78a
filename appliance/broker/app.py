"""The broker's ASGI application: four routes, every limit checked before any work.

``GET /token?kind=streaming|agent`` with ``Authorization: Bearer <device
credential>`` answers ``{"token": "..."}`` (what :class:`appliance.cloud.tokens.
BrokerTokens` expects). In order, cheapest first: header and body size (431,
413), the kind (400), the overall cap (429), the credential (401, the same
answer for unknown, revoked and wrong), the device's rate (429), then one
upstream mint (503 with ``Retry-After`` if AssemblyAI fails). Each answer is
one audit line: device, kind, result, status, time; never the token or the key.

``GET /healthz`` (liveness and whether the store reads), ``GET /metrics``
(Prometheus text) and ``GET /fleet`` (the devices' latest check-in, JSON);
the last two need ``Authorization: Bearer <admin token>`` when one is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from appliance.broker import credentials
from appliance.broker.fleet import Fleet, parse_checkin
from appliance.broker.limits import DEFAULT_LIMITS, Limits
from appliance.broker.metrics import Metrics
from appliance.broker.proxy import RestProxy, allowed
from appliance.broker.ratelimit import Bucket, KeyedLimiter, retry_after_header
from appliance.broker.store import DeviceStore, StoreError
from appliance.broker.upstream import KINDS, Kind, Minter, UpstreamError
from appliance.secrets import Secret, redact, register_token

audit_log = logging.getLogger("appliance.broker.audit")
log = logging.getLogger("appliance.broker")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Response:
    def __init__(
        self,
        status: int,
        body: bytes | str | dict[str, Any] | list[Any],
        headers: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.status = status
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        self.body = body.encode() if isinstance(body, str) else body
        self.headers = {
            "content-type": content_type,
            "cache-control": "no-store",
            **(headers or {}),
        }

    async def send(self, send: Send) -> None:
        raw = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        raw.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": self.body})


UNAUTHORIZED = {"error": "unauthorized"}


class BrokerApp:
    """The ASGI callable. ``clock`` is monotonic (limits), ``wallclock`` Unix time (logs)."""

    def __init__(
        self,
        store: DeviceStore,
        minter: Minter,
        *,
        limits: Limits = DEFAULT_LIMITS,
        admin_token: Secret | None = None,
        proxy: RestProxy | None = None,
        clock: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.minter = minter
        self.limits = limits
        self.admin_token = admin_token
        self.clock = clock
        self.wallclock = wallclock
        self.metrics = Metrics()
        self.fleet = Fleet(limits.max_fleet_entries)
        self.devices = KeyedLimiter(
            limits.device_requests_per_minute / 60.0,
            limits.device_burst,
            limits.max_fleet_entries,
        )
        self.overall = Bucket(limits.overall_requests_per_second, limits.overall_burst)
        self.proxy = proxy
        # sha256 of a credential that passed scrypt -> the stored digest it matched. Only a
        # device's first request pays the scrypt check; revoking (or re-enrolling) changes
        # the record, which is read from the store on every request, so it ends at once.
        self._verified: dict[bytes, str] = {}
        self.rest_devices = KeyedLimiter(
            limits.device_rest_requests_per_minute / 60.0,
            limits.device_rest_burst,
            limits.max_fleet_entries,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope.get("path", "").startswith("/v2/") and self.proxy is not None:
            response = await self._rest(scope, receive, send)
            if response is None:
                return  # the proxy answered
        else:
            response = await self._handle(scope, receive)
        await response.send(send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.minter.aclose()
                if self.proxy is not None:
                    await self.proxy.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _headers(self, scope: Scope) -> dict[str, str] | None:
        """The request's headers (lower-case names), or None if they exceed the limit."""
        headers: dict[str, str] = {}
        size = 0
        for name, value in scope.get("headers", ()):
            size += len(name) + len(value)
            headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        return headers if size <= self.limits.max_header_bytes else None

    async def _rest(self, scope: Scope, receive: Receive, send: Send) -> Response | None:
        """A pre-recorded API request for the proxy; a Response if refused here."""
        assert self.proxy is not None
        method, path = scope.get("method", ""), scope.get("path", "")
        audit: dict[str, Any] = {"event": "rest", "device": None, "method": method, "path": path}
        headers = self._headers(scope)

        def refuse(status: int, reason: str, extra: Mapping[str, str] | None = None) -> Response:
            self.metrics.refused[reason] += 1
            self._audit(audit, reason, status)
            return Response(status, UNAUTHORIZED if status == 401 else {"error": reason}, extra)

        if headers is None:
            return refuse(431, "too_large")
        if not allowed(method, path):
            return Response(404, {"error": "not found"})
        declared = headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > self.limits.max_upload_bytes:
            return refuse(413, "too_large")
        wait = self.overall.take(self.clock())
        if wait > 0:
            return refuse(429, "overloaded", {"retry-after": retry_after_header(wait)})
        # The uploader sends its credential where the key would go: raw, or as a Bearer.
        authorization = headers.get("authorization", "")
        if not authorization.lower().startswith("bearer "):
            authorization = f"Bearer {authorization}"
        record = await self._authenticate(authorization)
        if record is None:
            return refuse(401, "unauthorized", {"www-authenticate": "Bearer"})
        audit["device"] = record[0]
        wait = self.rest_devices.take(record[0], self.clock())
        if wait > 0:
            return refuse(429, "rate_limited", {"retry-after": retry_after_header(wait)})
        status = await self.proxy.forward(
            method, path, scope.get("query_string", b""), headers, receive, send
        )
        self.metrics.proxied[str(status)] += 1
        self._audit(audit, "proxied", status)
        return None

    async def _handle(self, scope: Scope, receive: Receive) -> Response:
        headers = self._headers(scope)
        if headers is None:
            self.metrics.refused["too_large"] += 1
            return Response(431, {"error": "request headers too large"})
        if not await self._body_fits(headers, receive):
            self.metrics.refused["too_large"] += 1
            return Response(413, {"error": "request body too large"})
        path = scope.get("path", "")
        if scope.get("method") != "GET":
            return Response(405, {"error": "method not allowed"}, {"allow": "GET"})
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        if path == "/token":
            started = self.clock()
            response = await self._token(headers, query, scope)
            self.metrics.observe_latency(self.clock() - started)
            return response
        if path == "/healthz":
            return await self._health()
        if path in ("/metrics", "/fleet"):
            if not self._admin_ok(headers):
                return Response(401, UNAUTHORIZED, {"www-authenticate": "Bearer"})
            now = self.wallclock()
            if path == "/metrics":
                return Response(
                    200,
                    self.metrics.render(self.fleet.devices(), now),
                    content_type="text/plain; version=0.0.4; charset=utf-8",
                )
            return Response(200, {"devices": [d.as_json(now) for d in self.fleet.devices()]})
        return Response(404, {"error": "not found"})

    async def _body_fits(self, headers: Mapping[str, str], receive: Receive) -> bool:
        declared = headers.get("content-length")
        if declared is not None and (
            not declared.isdigit() or int(declared) > self.limits.max_body_bytes
        ):
            return False
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return True
            received += len(message.get("body", b""))
            if received > self.limits.max_body_bytes:
                return False
            if not message.get("more_body", False):
                return True

    def _admin_ok(self, headers: Mapping[str, str]) -> bool:
        if self.admin_token is None:
            return True
        given = headers.get("authorization", "")
        expected = f"Bearer {self.admin_token.reveal()}"
        return hmac.compare_digest(given.encode(), expected.encode())

    async def _health(self) -> Response:
        try:
            await asyncio.to_thread(self.store.all)
        except StoreError as exc:
            log.error("health: %s", exc)
            return Response(503, {"status": "store unreadable"})
        return Response(200, {"status": "ok"})

    async def _token(
        self, headers: Mapping[str, str], query: Mapping[str, str], scope: Scope
    ) -> Response:
        kind_text = query.get("kind", "")
        kind: Kind | None = next((k for k in KINDS if k == kind_text), None)
        audit: dict[str, Any] = {"device": None, "kind": kind}
        client = scope.get("client")
        if client:
            audit["remote"] = client[0]

        def refuse(
            status: int,
            reason: str,
            extra: Mapping[str, str] | None = None,
            body: dict[str, Any] | None = None,
        ) -> Response:
            self.metrics.refused[reason] += 1
            self._audit(audit, reason, status)
            return Response(status, body or {"error": reason}, extra)

        if kind is None:
            return refuse(400, "bad_request", body={"error": "kind must be streaming or agent"})
        wait = self.overall.take(self.clock())
        if wait > 0:
            return refuse(429, "overloaded", {"retry-after": retry_after_header(wait)})
        record = await self._authenticate(headers.get("authorization", ""))
        if record is None:
            return refuse(401, "unauthorized", {"www-authenticate": "Bearer"}, UNAUTHORIZED)
        name, max_session = record
        audit["device"] = name
        checkin = parse_checkin(headers, query, self.limits.max_checkin_chars)
        wait = self.devices.take(name, self.clock())
        if wait > 0:
            self.fleet.note(name, self.wallclock(), kind, "rate_limited", checkin)
            return refuse(429, "rate_limited", {"retry-after": retry_after_header(wait)})
        try:
            token = await self.minter.mint(kind, max_session, self.clock())
        except UpstreamError as exc:
            if not exc.gated:
                self.metrics.upstream_errors[kind] += 1
                log.error(
                    "upstream: %s; devices told to retry in %.1f s",
                    redact(str(exc)),
                    exc.retry_after,
                )
            self.fleet.note(name, self.wallclock(), kind, "upstream", checkin)
            return refuse(
                503,
                "upstream",
                {"retry-after": retry_after_header(exc.retry_after)},
                {"error": "token service unavailable"},
            )
        register_token(token, float(self.limits.token_expires_seconds))
        self.metrics.minted[kind] += 1
        self.fleet.note(name, self.wallclock(), kind, "ok", checkin)
        self._audit(audit, "ok", 200)
        return Response(200, {"token": token.reveal()})

    async def _authenticate(self, authorization: str) -> tuple[str, int] | None:
        """``(name, max session seconds)`` of an active device, or None (whatever the cause)."""
        scheme, _, value = authorization.partition(" ")
        parts = credentials.split_credential(value.strip()) if scheme.lower() == "bearer" else None
        name, secret = parts if parts else ("", "")
        try:
            record = await asyncio.to_thread(self.store.get, name) if name else None
        except StoreError as exc:
            log.error("device store: %s", exc)
            record = None
        stored = record.secret if record is not None and record.active else None
        fingerprint = hashlib.sha256(value.encode()).digest()
        if stored is not None and self._verified.get(fingerprint) == stored.digest:
            ok = True  # checked before against this very record (it is re-read every time)
        else:
            # An unknown, revoked or malformed credential costs the same hash as a good one.
            ok = await asyncio.to_thread(credentials.verify, secret, stored)
            if ok and stored is not None:
                self._verified.pop(fingerprint, None)
                self._verified[fingerprint] = stored.digest
                while len(self._verified) > self.limits.max_fleet_entries:
                    self._verified.pop(next(iter(self._verified)))
        if not ok or record is None:
            return None
        max_session = record.max_session_seconds or self.limits.default_max_session_seconds
        return record.name, max_session

    def _audit(self, fields: dict[str, Any], result: str, status: int) -> None:
        when = datetime.fromtimestamp(self.wallclock(), UTC)
        line = {
            "event": "token",
            "time": when.isoformat(timespec="milliseconds"),
            **fields,
            "result": result,
            "status": status,
        }
        audit_log.info("%s", redact(json.dumps(line, sort_keys=True)))
