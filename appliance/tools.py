"""Local actions the voice agent may call: an HTTP request or a command.

Tools are declared in the ``agent.tools`` list of the YAML file and offered to
the agent in the Voice Agent API's flat schema.  When the agent calls one, the
arguments go to the configured URL as a JSON body (or query parameters for
GET), or to the configured command as JSON on its stdin (no shell is ever
involved).  Every run is bounded by the tool's ``timeout_seconds`` and
``max_output_bytes``; whatever goes wrong (unknown tool, refused connection,
non-zero exit, timeout) becomes an ``{"error": ...}`` result, because a tool
that raises or hangs would stall the spoken conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from appliance.cloud import tls
from appliance.config import ToolConfig

if TYPE_CHECKING:
    # Imported at the first HTTP tool call: resident, httpx costs about 5 MB, which an
    # agent with no HTTP tool (or none called yet) would carry for nothing.
    import httpx

log = logging.getLogger(__name__)

#: How much of a failing command's stderr is kept for the error result.
STDERR_TAIL_BYTES = 2048
#: Environment variables a tool command never inherits (credentials of the daemon).
WITHHELD_ENV = ("ASSEMBLYAI_API_KEY", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC")
_READ_CHUNK = 4096
#: How long a killed command may take to close its pipes and be collected.
REAP_TIMEOUT_SECONDS = 2.0


def definition(tool: ToolConfig) -> dict[str, Any]:
    """The flat-schema definition the agent sees (not OpenAI's nested ``function`` form)."""
    parameters = tool.parameters or {"type": "object", "properties": {}}
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": parameters,
    }


class ToolRunner:
    """Runs configured tools by name; ``run`` always returns a JSON-ready result."""

    def __init__(
        self, tools: list[ToolConfig], *, http_client: httpx.AsyncClient | None = None
    ) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self._client = http_client
        self.runs = 0
        self.failures = 0

    def definitions(self) -> list[dict[str, Any]]:
        return [definition(tool) for tool in self.tools.values()]

    async def run(self, name: str, arguments: dict[str, Any]) -> object:
        """Run tool ``name``; the result, or ``{"error": ...}`` (never raises, except cancel)."""
        tool = self.tools.get(name)
        self.runs += 1
        started = time.monotonic()
        if tool is None:
            self.failures += 1
            return {"error": f"unknown tool {name!r}"}
        try:
            async with asyncio.timeout(tool.timeout_seconds):
                if tool.kind == "command":
                    result = await self._run_command(tool, arguments)
                else:
                    result = await self._run_http(tool, arguments)
        except TimeoutError:
            result = {"error": f"tool {name!r} timed out after {tool.timeout_seconds:g} s"}
        except (OSError, ValueError) as exc:
            result = _failed(name, exc)
        if isinstance(result, dict) and "error" in result:
            self.failures += 1
            log.warning("tool %s failed: %s", name, result["error"])
        else:
            log.info("tool %s finished in %.0f ms", name, (time.monotonic() - started) * 1000)
        return result

    # ------------------------------------------------------------------ HTTP

    async def _run_http(self, tool: ToolConfig, arguments: dict[str, Any]) -> object:
        import httpx

        try:
            return await self._request(tool, arguments)
        except httpx.HTTPError as exc:
            return _failed(tool.name, exc)

    async def _request(self, tool: ToolConfig, arguments: dict[str, Any]) -> object:
        import httpx

        assert tool.url is not None
        timeout = httpx.Timeout(tool.timeout_seconds)
        request: dict[str, Any] = {"timeout": timeout}
        if tool.method == "GET":
            request["params"] = {
                key: value if isinstance(value, str) else json.dumps(value)
                for key, value in arguments.items()
            }
        else:
            request["json"] = arguments
        client = self._client
        owned = client is None
        if client is None:
            # The process's shared TLS context: a tool call must not parse a CA bundle.
            client = httpx.AsyncClient(
                timeout=timeout, follow_redirects=False, verify=tls.verify_for(tool.url)
            )
        try:
            async with client.stream(tool.method, tool.url, **request) as response:
                body, truncated = await _read_capped(response.aiter_bytes(), tool.max_output_bytes)
                status = response.status_code
        finally:
            if owned:
                await client.aclose()
        result = _as_result(body, truncated, tool.max_output_bytes)
        if status >= 400:
            return {"error": f"HTTP {status}", "output": result}
        return result

    # --------------------------------------------------------------- command

    async def _run_command(self, tool: ToolConfig, arguments: dict[str, Any]) -> object:
        env = {k: v for k, v in os.environ.items() if k not in WITHHELD_ENV}
        proc = await asyncio.create_subprocess_exec(
            *tool.command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: a timeout kills its children too
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feed = asyncio.create_task(_feed(proc.stdin, json.dumps(arguments).encode()))
        stderr_task = asyncio.create_task(_read_tail(proc.stderr, STDERR_TAIL_BYTES))
        try:
            body, truncated = await _read_capped(_iter_stream(proc.stdout), tool.max_output_bytes)
            if truncated:
                await _reap(proc)
            code = await proc.wait()
            stderr = await stderr_task
            await feed
        finally:
            if proc.returncode is None:  # timed out or cancelled: nothing of it may linger
                await _reap(proc)
            for task in (feed, stderr_task):
                if not task.done():
                    task.cancel()
        result = _as_result(body, truncated, tool.max_output_bytes)
        if code != 0 and not truncated:
            error: dict[str, Any] = {"error": f"command exited with status {code}"}
            detail = stderr.decode("utf-8", "replace").strip()
            if detail:
                error["stderr"] = detail
            if body:
                error["output"] = result
            return error
        return result


def _failed(name: str, exc: Exception) -> dict[str, str]:
    """The error result of a tool whose run raised ``exc``."""
    return {"error": f"tool {name!r} failed: {exc.__class__.__name__}: {exc}"}


def _as_result(body: bytes, truncated: bool, cap: int) -> object:
    """A JSON value: the output's JSON if it is JSON, else the text; cut output is marked."""
    text = body.decode("utf-8", "replace")
    if truncated:
        return {"output": text, "truncated": True, "note": f"output cut at {cap} bytes"}
    stripped = text.strip()
    if not stripped:
        return {"ok": True}
    try:
        return json.loads(stripped)
    except ValueError:
        return {"output": stripped}


async def _read_capped(chunks: AsyncIterator[bytes], cap: int) -> tuple[bytes, bool]:
    """Read at most ``cap`` bytes; True when there was more."""
    buf = bytearray()
    async for chunk in chunks:
        room = cap - len(buf)
        if len(chunk) > room:
            buf += chunk[:room]
            return bytes(buf), True
        buf += chunk
    return bytes(buf), False


async def _iter_stream(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await stream.read(_READ_CHUNK):
        yield chunk


async def _read_tail(stream: asyncio.StreamReader, keep: int) -> bytes:
    """Drain a stream (so the child never blocks on a full pipe), keeping its last bytes."""
    tail = b""
    while chunk := await stream.read(_READ_CHUNK):
        tail = (tail + chunk)[-keep:]
    return tail


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    """Write the arguments and close stdin; a child that ignores stdin is fine."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
        stdin.close()
        await stdin.wait_closed()


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill the command's process group and collect it.

    On Python 3.11 ``Process.wait()`` only returns once every pipe has seen
    EOF, and a stdout we stopped reading (output cap) is paused, so it is
    drained (discarding) until the killed writers are gone; bounded, in case
    a grandchild left the group and keeps the pipe open.
    """
    _kill_group(proc)
    try:
        async with asyncio.timeout(REAP_TIMEOUT_SECONDS):
            if proc.stdout is not None:
                while await proc.stdout.read(65536):
                    pass
            await proc.wait()
    except TimeoutError:
        log.warning(
            "tool command %d could not be collected; a child holds its output open", proc.pid
        )


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
