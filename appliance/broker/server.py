"""The key, the store and the ASGI app put together on uvicorn.

uvicorn is a production ASGI server (h11 HTTP/1.1 parser, graceful shutdown,
a connection cap, ``X-Forwarded-For`` from a trusted proxy); the app itself is
a plain ASGI callable, so the ``broker`` extra adds uvicorn and nothing else
(see README, "Dependencies"). :class:`BrokerThread` runs the same server on a
background thread for tests, the benchmark and ``appliance demo --broker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.broker.app import BrokerApp
from appliance.broker.limits import DEFAULT_LIMITS, Limits
from appliance.broker.proxy import RestProxy
from appliance.broker.store import DeviceStore
from appliance.broker.upstream import Minter, UpstreamUrls
from appliance.config import EndpointsConfig
from appliance.secrets import Secret, loose_permissions, register_secret

if TYPE_CHECKING:
    import uvicorn  # imported where it runs: the broker extra's one dependency

log = logging.getLogger("appliance.broker")

KEY_CREDENTIAL = "assemblyai-api-key"
ADMIN_CREDENTIAL = "broker-admin-token"
KEY_ENV = "ASSEMBLYAI_API_KEY"
MAX_SECRET_BYTES = 16 * 1024


class SecretMissing(Exception):
    """The key (or another secret the broker was told to read) is not there."""


def read_secret(
    path: Path | None, credential: str, *, env: str | None = None, what: str
) -> Secret | None:
    """A secret from ``path``, else the systemd credential, else ``$env``; registered for
    redaction. None if none of them is set; :class:`SecretMissing` if one is named but bad."""
    candidates: list[Path] = []
    if path is not None:
        candidates.append(path)
    elif os.environ.get("CREDENTIALS_DIRECTORY"):
        candidates.append(Path(os.environ["CREDENTIALS_DIRECTORY"]) / credential)
    for candidate in candidates:
        try:
            with candidate.open("rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                data = f.read(MAX_SECRET_BYTES + 1)
        except FileNotFoundError:
            if path is not None:
                raise SecretMissing(f"{what}: {candidate} not found") from None
            continue
        except OSError as exc:
            raise SecretMissing(f"{what}: cannot read {candidate}: {exc.strerror}") from None
        value = data.decode("utf-8", "replace").strip()
        if not value or len(data) > MAX_SECRET_BYTES:
            raise SecretMissing(f"{what}: {candidate} is empty or too large")
        if path is not None and (warning := loose_permissions(candidate, mode)):
            log.warning("%s: %s", what, warning)
        return register_secret(Secret(value, source=str(candidate)))
    if env and os.environ.get(env):
        return register_secret(Secret(os.environ[env], source=f"${env}"))
    return None


def upstream_urls(region: str = "us", base_url: str | None = None) -> UpstreamUrls:
    """The token endpoints of a region (or of one server, the emulator)."""
    resolved = EndpointsConfig(region=region, base_url=base_url).resolved()
    return UpstreamUrls(
        streaming=resolved.streaming_token_url,
        agent=resolved.agent_token_url,
        rest=resolved.rest_url,
    )


@dataclasses.dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    #: Addresses whose X-Forwarded-For uvicorn believes (the TLS reverse proxy).
    forwarded_allow_ips: str = "127.0.0.1"
    limits: Limits = DEFAULT_LIMITS


def build_app(
    store: DeviceStore,
    key: Secret,
    urls: UpstreamUrls,
    *,
    limits: Limits = DEFAULT_LIMITS,
    admin_token: Secret | None = None,
) -> BrokerApp:
    return BrokerApp(
        store,
        Minter(urls, key, limits),
        limits=limits,
        admin_token=admin_token,
        proxy=RestProxy(urls.rest, key, limits),
    )


def uvicorn_config(app: BrokerApp, options: ServeOptions) -> uvicorn.Config:
    import uvicorn

    limits = options.limits
    return uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        http="h11",
        lifespan="on",
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        proxy_headers=True,
        forwarded_allow_ips=options.forwarded_allow_ips,
        server_header=False,
        access_log=False,  # the audit log says what matters, without query strings
        log_config=None,  # the process's logging (journald, redaction) as set up by the CLI
        timeout_graceful_shutdown=10,
    )


def serve(app: BrokerApp, options: ServeOptions) -> None:
    """Run until SIGTERM or SIGINT (uvicorn handles both, finishing requests in flight)."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, options))
    server.run()


class BrokerThread:
    """The broker on uvicorn in a background thread, on a loopback port of its own."""

    def __init__(self, app: BrokerApp, limits: Limits | None = None) -> None:
        import uvicorn

        self.app = app
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        options = ServeOptions(port=self.port, limits=limits or app.limits)
        config = uvicorn_config(app, options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="broker", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._sock]))

    def __enter__(self) -> BrokerThread:
        self._thread.start()
        for _ in range(500):
            if self._server.started or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        if not self._server.started:
            raise RuntimeError("the broker did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        with contextlib.suppress(OSError):
            self._sock.close()
