"""Local tools: real HTTP on loopback and real subprocesses, bounded in time and size."""

from __future__ import annotations

import asyncio
import sys
import time

import psutil
import pytest
from aiohttp import web

from appliance.config import ToolConfig
from appliance.tools import ToolRunner
from tests.agent.helpers import serve


def command_tool(script: str, **kwargs) -> ToolConfig:
    return ToolConfig(name="cmd", kind="command", command=[sys.executable, "-c", script], **kwargs)


@pytest.fixture
async def http_tool_server():
    """A tiny HTTP service on 127.0.0.1 recording what it was sent."""
    seen: list[dict] = []

    async def echo(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append({"method": request.method, "query": dict(request.query), "body": body})
        return web.json_response({"temperature": 21, "got": body or dict(request.query)})

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503, text="maintenance")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * 100_000)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_post("/fail", fail)
    app.router.add_post("/big", big)
    app.router.add_post("/slow", slow)
    async with serve(app) as base:
        yield f"{base}", seen


async def test_http_tool_posts_arguments_as_json(http_tool_server):
    base, seen = http_tool_server
    runner = ToolRunner([ToolConfig(name="weather", url=f"{base}/echo")])
    result = await runner.run("weather", {"city": "Oslo", "days": 2})
    assert result == {"temperature": 21, "got": {"city": "Oslo", "days": 2}}
    assert seen == [{"method": "POST", "query": {}, "body": {"city": "Oslo", "days": 2}}]


async def test_http_get_tool_sends_query_parameters(http_tool_server):
    base, seen = http_tool_server
    runner = ToolRunner([ToolConfig(name="w", url=f"{base}/echo", method="GET")])
    await runner.run("w", {"city": "Oslo", "days": 2})
    assert seen[0]["method"] == "GET"
    assert seen[0]["query"] == {"city": "Oslo", "days": "2"}


async def test_http_error_status_is_an_error_result(http_tool_server):
    base, _ = http_tool_server
    runner = ToolRunner([ToolConfig(name="w", url=f"{base}/fail")])
    result = await runner.run("w", {})
    assert result == {"error": "HTTP 503", "output": {"output": "maintenance"}}


async def test_http_output_is_capped(http_tool_server):
    base, _ = http_tool_server
    runner = ToolRunner([ToolConfig(name="w", url=f"{base}/big", max_output_bytes=100)])
    result = await runner.run("w", {})
    assert result["truncated"] is True
    assert result["output"] == "x" * 100


async def test_http_timeout_is_an_error_result(http_tool_server):
    base, _ = http_tool_server
    runner = ToolRunner([ToolConfig(name="w", url=f"{base}/slow", timeout_seconds=0.3)])
    started = time.monotonic()
    result = await runner.run("w", {})
    assert "timed out" in result["error"]
    assert time.monotonic() - started < 4  # it did not wait for the slow server


async def test_http_refused_connection_is_an_error_result(unused_tcp_port):
    runner = ToolRunner([ToolConfig(name="w", url=f"http://127.0.0.1:{unused_tcp_port}/x")])
    result = await runner.run("w", {})
    assert "ConnectError" in result["error"]


async def test_command_gets_arguments_on_stdin_and_returns_its_json():
    script = "import json,sys; a=json.load(sys.stdin); print(json.dumps({'sum': a['x'] + a['y']}))"
    runner = ToolRunner([command_tool(script)])
    assert await runner.run("cmd", {"x": 2, "y": 3}) == {"sum": 5}


async def test_command_plain_text_output_is_wrapped():
    runner = ToolRunner([command_tool("print('lights are on')")])
    assert await runner.run("cmd", {}) == {"output": "lights are on"}


async def test_failing_command_returns_an_error_with_stderr():
    runner = ToolRunner([command_tool("import sys; sys.stderr.write('no such lamp'); sys.exit(3)")])
    result = await runner.run("cmd", {})
    assert result == {"error": "command exited with status 3", "stderr": "no such lamp"}


async def test_missing_command_is_an_error_result(tmp_path):
    tool = ToolConfig(name="cmd", kind="command", command=[str(tmp_path / "nope")])
    result = await ToolRunner([tool]).run("cmd", {})
    assert "FileNotFoundError" in result["error"]


async def test_command_timeout_kills_it_and_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess,sys,time;"
        f"p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']);"
        f"open({str(pid_file)!r},'w').write(str(p.pid));"
        "time.sleep(60)"
    )
    runner = ToolRunner([command_tool(script, timeout_seconds=1.0)])
    result = await runner.run("cmd", {})
    assert "timed out" in result["error"]
    child = int(pid_file.read_text())
    gone = not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    if not gone:
        psutil.wait_procs([psutil.Process(child)], timeout=2)
        gone = not psutil.pid_exists(child)
    assert gone, "the tool's child process survived the timeout"


async def test_command_output_is_capped_and_the_command_stopped():
    script = "import sys\nwhile True: sys.stdout.write('y' * 1000)"
    runner = ToolRunner([command_tool(script, max_output_bytes=500, timeout_seconds=10)])
    result = await runner.run("cmd", {})
    assert result["truncated"] is True
    assert result["output"] == "y" * 500


async def test_command_does_not_inherit_the_api_key(monkeypatch):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "secret-key-value-123")
    script = "import json,os; print(json.dumps({'key': os.environ.get('ASSEMBLYAI_API_KEY')}))"
    assert await ToolRunner([command_tool(script)]).run("cmd", {}) == {"key": None}


async def test_unknown_tool_is_an_error_result():
    result = await ToolRunner([]).run("nope", {})
    assert result == {"error": "unknown tool 'nope'"}
