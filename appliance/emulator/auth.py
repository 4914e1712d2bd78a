"""Authentication rules, one per API family (they differ on purpose)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from appliance.emulator.tokens import Redeem, Token, TokenStore

REST_AUTH_ERROR = {"error": "Authentication error, API token missing/invalid"}


@dataclass
class AuthResult:
    ok: bool
    method: str = ""  # "api_key" or "token"
    token: Token | None = None
    reason: str = ""
    #: The token was already spent: the client broke the single-use rule.
    reused: bool = False


def raw_key_ok(request: web.Request, api_keys: tuple[str, ...]) -> bool:
    """REST and streaming: ``Authorization: <key>``; a ``Bearer`` prefix is wrong."""
    return request.headers.get("Authorization", "") in api_keys


def bearer_key_ok(request: web.Request, api_keys: tuple[str, ...]) -> bool:
    """Voice agent: ``Authorization: Bearer <key>``."""
    value = request.headers.get("Authorization", "")
    scheme, _, key = value.partition(" ")
    return scheme == "Bearer" and key.strip() in api_keys


def websocket_auth(
    request: web.Request, kind: str, api_keys: tuple[str, ...], tokens: TokenStore
) -> AuthResult:
    """Authorise a WebSocket upgrade for ``kind`` ("streaming" or "agent")."""
    query_tokens = request.query.getall("token", [])
    if len(query_tokens) > 1:
        return AuthResult(False, reason="Unauthorized: more than one token parameter")
    header = request.headers.get("Authorization")
    if query_tokens:
        candidate = query_tokens[0]
    elif header is None:
        return AuthResult(False, reason="Unauthorized: missing authorization")
    elif kind == "agent":
        scheme, _, value = header.partition(" ")
        if scheme != "Bearer":
            return AuthResult(False, reason="Unauthorized: use 'Authorization: Bearer <key>'")
        if value.strip() in api_keys:
            return AuthResult(True, method="api_key")
        candidate = value.strip()
    else:
        if header.startswith("Bearer "):
            return AuthResult(
                False, reason="Unauthorized: invalid API key or token (no Bearer prefix here)"
            )
        if header in api_keys:
            return AuthResult(True, method="api_key")
        candidate = header
    outcome, token = tokens.redeem(candidate, kind)
    if outcome is Redeem.OK:
        return AuthResult(True, method="token", token=token)
    reasons = {
        Redeem.UNKNOWN: "Unauthorized: invalid API key or token",
        Redeem.USED: "Unauthorized: token has already been used",
        Redeem.EXPIRED: "Unauthorized: token has expired",
        Redeem.REFUSED: "Unauthorized: token refused",
    }
    return AuthResult(False, token=token, reason=reasons[outcome], reused=outcome is Redeem.USED)


def parse_token_request(request: web.Request) -> tuple[int, int | None] | str:
    """Validate ``expires_in_seconds`` (1..600) and ``max_session_duration_seconds``
    (60..10800); returns (expires, max_session or None) or an error message."""
    q = request.query
    for name in ("expires_in_seconds", "max_session_duration_seconds"):
        if len(q.getall(name, [])) > 1:
            return f"{name} must be given once"
    raw = q.get("expires_in_seconds")
    if raw is None:
        return "expires_in_seconds is required"
    try:
        expires = int(raw)
    except ValueError:
        return "expires_in_seconds must be an integer"
    if not 1 <= expires <= 600:
        return "expires_in_seconds must be between 1 and 600"
    raw_max = q.get("max_session_duration_seconds")
    if raw_max is None:
        return expires, None
    try:
        max_s = int(raw_max)
    except ValueError:
        return "max_session_duration_seconds must be an integer"
    if not 60 <= max_s <= 10800:
        return "max_session_duration_seconds must be between 60 and 10800"
    return expires, max_s
