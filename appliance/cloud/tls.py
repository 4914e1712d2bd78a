"""One verified TLS context for the whole process, made only when a URL needs TLS.

A verified ``ssl.SSLContext`` parses the whole CA bundle into memory (about
1 MB of RSS each), and by default every ``httpx.AsyncClient`` builds its own
at construction, even for ``http://`` URLs, and ``websockets`` builds a new
one for every ``wss://`` connection. On a 512 MB Pi that is memory for
nothing: one context serves every client and connection (an ``SSLContext`` is
safe to share), and on loopback (the emulator, development) no CA bundle is
needed at all.

* :func:`context_for` gives the shared context for ``https://`` / ``wss://``
  and ``None`` for plain URLs: it is what ``websockets.connect(ssl=...)``
  takes.
* :func:`verify_for` is for ``httpx``'s ``verify=``, which always wants a
  context: the shared one for ``https://``; for ``http://`` a context without
  any trust anchor, so a client made for a plain URL can never complete a
  TLS handshake with anybody (it fails closed instead of trusting).

Verification is never weakened: both contexts require a certificate and check
the host name. The CA bundle is the one httpx uses by default
(``$SSL_CERT_FILE`` or ``$SSL_CERT_DIR`` if set, else certifi's), so HTTP
requests trust exactly what they trusted before.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

TLS_SCHEMES = ("https", "wss")


def needs_tls(url: str) -> bool:
    """True for ``https://`` and ``wss://`` URLs."""
    return urlsplit(url).scheme.lower() in TLS_SCHEMES


def make_verified_context() -> ssl.SSLContext:
    """A new verifying client context with the CA bundle httpx would use."""
    cafile = os.environ.get("SSL_CERT_FILE")
    capath = os.environ.get("SSL_CERT_DIR")
    if cafile:
        return ssl.create_default_context(cafile=cafile)
    if capath:
        return ssl.create_default_context(capath=capath)
    import certifi  # httpx's own dependency; imported only when TLS is really used

    return ssl.create_default_context(cafile=certifi.where())


def make_plain_only_context() -> ssl.SSLContext:
    """A verifying context that trusts no certificate: for clients of plain URLs only."""
    # PROTOCOL_TLS_CLIENT means CERT_REQUIRED and check_hostname; with no CA loaded
    # every handshake is refused. Cheap: no bundle is parsed.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class TlsContexts:
    """The process's contexts, each made on first need and then shared."""

    def __init__(self, make_verified: Callable[[], ssl.SSLContext] = make_verified_context) -> None:
        self._make_verified = make_verified
        self._verified: ssl.SSLContext | None = None
        self._plain_only: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self.made = 0  # verified contexts made: at most one per process

    def shared_context(self) -> ssl.SSLContext:
        """The verified context, made on first call."""
        with self._lock:
            if self._verified is None:
                self._verified = self._make_verified()
                self.made += 1
            return self._verified

    def context_for(self, url: str) -> ssl.SSLContext | None:
        """The shared context for a TLS URL, None for a plain one (``websockets`` ``ssl=``)."""
        return self.shared_context() if needs_tls(url) else None

    def verify_for(self, url: str) -> ssl.SSLContext:
        """What to give ``httpx.AsyncClient(verify=...)`` for a client of ``url``."""
        if needs_tls(url):
            return self.shared_context()
        with self._lock:
            if self._plain_only is None:
                self._plain_only = make_plain_only_context()
            return self._plain_only


#: The process-wide contexts.
default = TlsContexts()
shared_context = default.shared_context
context_for = default.context_for
verify_for = default.verify_for
