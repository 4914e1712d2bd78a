"""Where the outbox sends a transcript: an HTTP POST or a local command, one attempt each.

Each ``send`` makes one attempt and says what came back as an
:class:`~appliance.protocol.outbox.Attempt`; it never raises for the
destination's trouble, and never retries (the outbox decides when).

Neither the URL nor the credential is ever put into a reason, a log line or
an exception: a reason names an HTTP status, a timeout, or the kind of
transport error (``ConnectError``), nothing httpx would print with the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import TYPE_CHECKING, Protocol

import httpx

from appliance.cloud import tls
from appliance.protocol.outbox import Attempt, destination_id, http_verdict
from appliance.protocol.retry import parse_retry_after
from appliance.secrets import register_secret
from appliance.tools import WITHHELD_ENV

if TYPE_CHECKING:
    from appliance.config import OutboxConfig
    from appliance.secrets import Secret

#: The environment variable a command finds the idempotency key in.
KEY_ENV = "APPLIANCE_IDEMPOTENCY_KEY"
#: How long a killed command may take to be collected.
REAP_TIMEOUT_SECONDS = 2.0


class Destination(Protocol):
    """One place transcripts go."""

    #: A digest of the destination (never the URL itself): what rows are stored under.
    id: str
    #: "url" or "command", for people.
    kind: str

    async def send(self, body: bytes, key: str) -> Attempt: ...

    async def aclose(self) -> None: ...


class HttpDestination:
    """POSTs the JSON body with ``Idempotency-Key`` and the configured auth header.

    Redirects are not followed (a 3xx is an answer, and refused): the credential
    goes to the configured URL only. The answer's body is never read.
    """

    kind = "url"

    def __init__(
        self, url: str, timeout_seconds: float, auth_header: str, auth: Secret | None
    ) -> None:
        self.id = destination_id(url, ())
        self._url = url
        self._timeout = timeout_seconds
        self._auth_header = auth_header
        self._auth = auth
        self._client = httpx.AsyncClient(
            timeout=timeout_seconds, verify=tls.verify_for(url), follow_redirects=False
        )

    async def send(self, body: bytes, key: str) -> Attempt:
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        if self._auth is not None:
            headers[self._auth_header] = self._auth.reveal()
        try:
            async with self._client.stream(
                "POST", self._url, content=body, headers=headers
            ) as answer:
                status = answer.status_code
                retry_after = parse_retry_after(answer.headers.get("retry-after"))
        except httpx.TimeoutException:
            return Attempt("retry", f"no answer within {self._timeout:g} s")
        except httpx.TransportError as exc:
            return Attempt("retry", f"no answer ({type(exc).__name__})")
        return Attempt(http_verdict(status), f"HTTP {status}", retry_after)

    async def aclose(self) -> None:
        await self._client.aclose()


class CommandDestination:
    """Runs the configured argv (no shell) with the JSON body on stdin and the key in
    ``$APPLIANCE_IDEMPOTENCY_KEY``; exit status 0 is delivered, anything else is tried
    again later. Its output is discarded; it never sees the daemon's credentials."""

    kind = "command"

    def __init__(self, argv: list[str], timeout_seconds: float) -> None:
        self.id = destination_id(None, argv)
        self._argv = list(argv)
        self._timeout = timeout_seconds

    async def send(self, body: bytes, key: str) -> Attempt:
        env = {k: v for k, v in os.environ.items() if k not in WITHHELD_ENV}
        env[KEY_ENV] = key
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills its children
            )
        except OSError as exc:
            return Attempt("retry", f"cannot run the command: {exc.strerror or type(exc).__name__}")
        try:
            async with asyncio.timeout(self._timeout):
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    await proc.communicate(body)
                code = await proc.wait()
        except TimeoutError:
            return Attempt("retry", f"command did not finish within {self._timeout:g} s")
        finally:
            if proc.returncode is None:  # timed out or cancelled: nothing of it may linger
                await _kill(proc)
        if code == 0:
            return Attempt("delivered", "exit status 0")
        return Attempt("retry", f"command exited with status {code}")

    async def aclose(self) -> None:
        pass


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REAP_TIMEOUT_SECONDS):
            await proc.wait()


def destination_for(box: OutboxConfig, auth: Secret | None) -> Destination:
    """The configured destination (a loaded configuration has exactly one). The URL is
    registered with the log redactor like a credential: it may carry one."""
    if box.url is not None:
        register_secret(box.url)
        return HttpDestination(box.url, box.timeout_seconds, box.auth_header, auth)
    if box.command:
        return CommandDestination(box.command, box.timeout_seconds)
    raise ValueError("the outbox has neither a url nor a command")
