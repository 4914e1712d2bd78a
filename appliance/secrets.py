"""Secret values that refuse to be printed, and the registry the log redactor reads.

A ``Secret`` hides its value from ``str``/``repr``/f-strings; code that really
needs the value calls ``reveal()``, which makes every use easy to find. Every
secret loaded, and every temporary token minted, is registered so that the
logging redaction filter can scrub it from any line, even one built from an
exception message or a URL.
"""

from __future__ import annotations

import re
import stat
import threading
from pathlib import Path

_MIN_SECRET_LENGTH = 8
_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None

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


def register_secret(secret: Secret | str) -> Secret:
    """Remember a secret value so that log redaction removes it everywhere."""
    if isinstance(secret, str):
        secret = Secret(secret)
    value = secret.reveal()
    if len(value) >= _MIN_SECRET_LENGTH:
        global _pattern
        with _lock:
            if value not in _known:
                _known.add(value)
                alternatives = sorted(_known, key=len, reverse=True)
                _pattern = re.compile("|".join(re.escape(v) for v in alternatives))
    return secret


def redact(text: str) -> str:
    """Remove every registered secret and any credential-looking field from ``text``."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub("***", text)
    return _CREDENTIAL_FIELDS.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)


def loose_permissions(path: Path, mode: int) -> str | None:
    """Why a secret file's mode is too open, or None: a key file's group and other users
    should have no access at all (0600 or 0400), whoever owns it."""
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    return f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
