"""Who may read the page and who may press its buttons: pure checks, no I/O but one file read.

Reading is open to whoever reaches the port, but only under a Host name the
server answers to (so a web page on a rebinding DNS name cannot read the
captions through the kiosk's own browser) and, for the feed, only from a page
of the same origin (browsers do not apply CORS to WebSockets).

Controls need a bearer token from ``web.control_token_file``. It travels in the
``Authorization`` header, which a page of another origin cannot set without a
CORS preflight this server never answers, and it is compared in constant time.
"""

from __future__ import annotations

import enum
import hmac
import logging
from pathlib import Path
from urllib.parse import urlsplit

from appliance.secrets import Secret, loose_permissions, register_secret

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BIND_HOSTS = frozenset({"", "0.0.0.0", "::"})


def host_name(value: str | None) -> str | None:
    """The host part of a ``Host`` header (``[::1]:8080`` -> ``::1``), lower case."""
    if not value:
        return None
    try:
        return urlsplit("//" + value.strip()).hostname
    except ValueError:
        return None


def host_allowed(host_header: str | None, bind_host: str) -> bool:
    """Whether a request names this server. Bound to all interfaces, any name is
    accepted (the LAN name is unknown); otherwise loopback names and the bound host."""
    if bind_host in WILDCARD_BIND_HOSTS:
        return True
    name = host_name(host_header)
    if name is None:
        return False
    return name in LOOPBACK_NAMES or name == bind_host.lower().strip("[]")


def origin_allowed(origin: str | None, host_header: str | None) -> bool:
    """Same-origin check for the feed. No Origin header means no browser page asked
    (a script or curl), which cannot ride on someone else's browser, so it passes."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host_header:
        return False
    return parts.netloc.lower() == host_header.strip().lower()


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    DISABLED = "controls are disabled"
    NOT_CONFIGURED = "no control token is configured"
    MISSING = "no bearer token"
    WRONG = "wrong token"


class ControlGuard:
    """Decides whether a control request carries the configured token."""

    def __init__(self, enabled: bool, token: Secret | None) -> None:
        self.enabled = enabled
        self._token = token.reveal().encode() if token is not None else None

    @classmethod
    def from_file(cls, enabled: bool, path: Path | None) -> ControlGuard:
        """Read the token if controls are on. A missing, unreadable or empty file leaves
        controls refused (and says so once) rather than stopping the daemon."""
        if not enabled:
            return cls(False, None)
        if path is None:
            log.error("web controls are enabled but web.control_token_file is not set")
            return cls(True, None)
        try:
            mode = path.stat().st_mode
            value = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            log.error(
                "web controls refused: cannot read the control token file %s: %s", path, reason
            )
            return cls(True, None)
        if not value:
            log.error("web controls refused: the control token file %s is empty", path)
            return cls(True, None)
        warning = loose_permissions(path, mode)
        if warning:
            log.warning("the control token file %s", warning)
        return cls(True, register_secret(Secret(value, source="web.control_token_file")))

    def check(self, authorization: str | None) -> Verdict:
        if not self.enabled:
            return Verdict.DISABLED
        if self._token is None:
            return Verdict.NOT_CONFIGURED
        if not authorization:
            return Verdict.MISSING
        scheme, _, given = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return Verdict.MISSING
        if hmac.compare_digest(given.strip().encode(), self._token):
            return Verdict.ALLOWED
        return Verdict.WRONG
