"""Secret values that refuse to be printed, and the registry the log redactor reads.

A ``Secret`` hides its value from ``str``/``repr``/f-strings; code that really
needs the value calls ``reveal()``, which makes every use easy to find. Every
secret loaded, and every temporary token minted, is registered so that the
logging redaction filter can scrub it from any line, even one built from an
exception message or a URL.

Long-lived secrets (the API key, a broker credential, the page's control
token) stay registered. A temporary token stays only while it could open
something: until it expires or is used (tokens are single-use), so the work
of a registration and of a redaction depends on the tokens valid now, never on
how many were ever issued. Redaction looks each registered value up as a plain
substring; nothing is compiled when a secret is registered.
"""

from __future__ import annotations

import re
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_MIN_SECRET_LENGTH = 8
#: At most this many temporary tokens are registered at once. A token leaves when it
#: is used or expires, so a device holds a handful; the bound caps one redaction's
#: work whatever happens (past it, the token closest to expiry is dropped first).
MAX_LIVE_TOKENS = 256

# Query parameters and headers that carry credentials, redacted whatever their value.
_CREDENTIAL_FIELDS = re.compile(
    r"(?i)(\b(?:token|api_key|apikey|key|access_token)=)[^&\s'\"]+"
    r"|(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)[^\s'\",}]+"
)


class Secret:
    """A credential. ``str(secret)`` is ``'***'``; ``reveal()`` gives the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(***, source={self.source!r})"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass
class RegistryStats:
    """What the registry holds and the work it did (for tests and the soak)."""

    permanent: int = 0
    tokens: int = 0
    orderings: int = 0  # times the redaction order was rebuilt (once per change, lazily)
    scanned: int = 0  # token entries visited while dropping expired or surplus ones
    evicted: int = 0  # tokens dropped while possibly still valid (MAX_LIVE_TOKENS reached)


class SecretRegistry:
    """The values redaction removes: permanent secrets and tokens valid for a while.

    Registration is a dictionary insert (plus dropping tokens whose time is
    up); the order redaction tries values in (longest first, so a value
    containing another goes whole) is rebuilt by the next redaction after a
    change. Safe to use from several threads.
    """

    def __init__(self, max_tokens: int = MAX_LIVE_TOKENS) -> None:
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._permanent: set[str] = set()
        self._tokens: dict[str, float] = {}  # value -> monotonic time it stops being valid
        self._next_expiry = float("inf")
        self._ordered: tuple[str, ...] | None = ()
        self.stats = RegistryStats()

    def add(self, value: str) -> None:
        """Scrub ``value`` from now on."""
        if len(value) < _MIN_SECRET_LENGTH:
            return
        with self._lock:
            if value not in self._permanent:
                self._permanent.add(value)
                self._tokens.pop(value, None)
                self._ordered = None

    def add_token(self, value: str, valid_for_seconds: float, now: float) -> None:
        """Scrub ``value`` until ``now + valid_for_seconds`` or until it is retired."""
        if len(value) < _MIN_SECRET_LENGTH:
            return
        until = now + valid_for_seconds
        with self._lock:
            if value in self._permanent:
                return
            self._drop_expired(now)
            self._tokens[value] = max(until, self._tokens.get(value, until))
            self._next_expiry = min(self._next_expiry, until)
            while len(self._tokens) > self.max_tokens:
                self._evict_soonest()
            self._ordered = None

    def retire(self, value: str) -> None:
        """``value`` (a token) was used: it opens nothing any more."""
        with self._lock:
            if self._tokens.pop(value, None) is not None:
                self._ordered = None

    def redact(self, text: str) -> str:
        """``text`` with every registered value replaced by ``***``."""
        ordered = self._ordered
        if ordered is None:
            ordered = self._order()
        for value in ordered:
            if value in text:
                text = text.replace(value, "***")
        return text

    def snapshot(self) -> RegistryStats:
        with self._lock:
            self.stats.permanent = len(self._permanent)
            self.stats.tokens = len(self._tokens)
            return RegistryStats(**vars(self.stats))

    def _order(self) -> tuple[str, ...]:
        with self._lock:
            ordered = self._ordered
            if ordered is None:
                values = self._permanent.union(self._tokens)
                ordered = tuple(sorted(values, key=len, reverse=True))
                self._ordered = ordered
                self.stats.orderings += 1
            return ordered

    def _drop_expired(self, now: float) -> None:
        if now < self._next_expiry:
            return
        self.stats.scanned += len(self._tokens)
        self._tokens = {v: until for v, until in self._tokens.items() if until > now}
        self._next_expiry = min(self._tokens.values(), default=float("inf"))
        self._ordered = None

    def _evict_soonest(self) -> None:
        self.stats.scanned += len(self._tokens)
        soonest = min(self._tokens, key=self._tokens.__getitem__)
        del self._tokens[soonest]
        self._next_expiry = min(self._tokens.values(), default=float("inf"))
        self.stats.evicted += 1


_registry = SecretRegistry()


def register_secret(secret: Secret | str) -> Secret:
    """Remember a long-lived secret so that log redaction removes it everywhere."""
    if isinstance(secret, str):
        secret = Secret(secret)
    _registry.add(secret.reveal())
    return secret


def register_token(
    secret: Secret | str, valid_for_seconds: float, *, now: float | None = None
) -> Secret:
    """Remember a temporary token for as long as it could be redeemed.

    ``valid_for_seconds`` is the longest the service may still accept it; pass
    :func:`retire_secret` once it has been used. ``now`` is ``time.monotonic()``.
    """
    if isinstance(secret, str):
        secret = Secret(secret)
    _registry.add_token(
        secret.reveal(), valid_for_seconds, time.monotonic() if now is None else now
    )
    return secret


def retire_secret(secret: Secret | str) -> None:
    """A token was used (single-use): log lines need no longer scrub it."""
    _registry.retire(secret.reveal() if isinstance(secret, Secret) else secret)


def registry_stats() -> RegistryStats:
    """The process registry's size and the work it has done."""
    return _registry.snapshot()


def redact(text: str) -> str:
    """Remove every registered secret and any credential-looking field from ``text``."""
    text = _registry.redact(text)
    return _CREDENTIAL_FIELDS.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


def loose_permissions(path: Path, mode: int) -> str | None:
    """Why a secret file's mode is too open, or None: a key file's group and other users
    should have no access at all (0600 or 0400), whoever owns it."""
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    return f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
