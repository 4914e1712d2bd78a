"""Temporary tokens: single-use, expiring, scoped to one API family."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import Enum


class Redeem(Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"
    REFUSED = "refused"


@dataclass
class Token:
    value: str
    kind: str  # "streaming" or "agent"
    expires_at: float  # monotonic deadline for redemption
    max_session_s: float  # nominal seconds (unscaled)
    redeemed: bool = False
    attempts: int = 0


class TokenStore:
    """Issues and redeems tokens; counts reuse so tests can prove one token per connection."""

    def __init__(self) -> None:
        self._tokens: dict[str, Token] = {}
        self.issued = 0
        self.reuse_attempts = 0
        self.refuse_next = 0

    def issue(self, kind: str, lifetime_s: float, max_session_s: float) -> Token:
        prefix = "st" if kind == "streaming" else "ag"
        token = Token(
            value=f"{prefix}_{secrets.token_hex(24)}",
            kind=kind,
            expires_at=time.monotonic() + lifetime_s,
            max_session_s=max_session_s,
        )
        self._tokens[token.value] = token
        self.issued += 1
        return token

    def redeem(self, value: str, kind: str) -> tuple[Redeem, Token | None]:
        token = self._tokens.get(value)
        if token is None or token.kind != kind:
            return Redeem.UNKNOWN, None
        token.attempts += 1
        if token.redeemed:
            self.reuse_attempts += 1
            return Redeem.USED, token
        if self.refuse_next > 0:
            self.refuse_next -= 1
            token.redeemed = True  # a refused token is burnt, as a failed handshake would
            return Redeem.REFUSED, token
        if time.monotonic() >= token.expires_at:
            return Redeem.EXPIRED, token
        token.redeemed = True
        return Redeem.OK, token

    def expire_all(self) -> int:
        now = time.monotonic()
        count = 0
        for token in self._tokens.values():
            if not token.redeemed and token.expires_at > now:
                token.expires_at = now
                count += 1
        return count

    def attempts_per_token(self) -> dict[str, int]:
        """Connection attempts per issued token (values only; token text stays private)."""
        return {f"token#{i}": t.attempts for i, t in enumerate(self._tokens.values())}
