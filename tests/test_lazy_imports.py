"""What start-up does not load: httpx waits for the first request (the first token or upload)."""

from __future__ import annotations

import subprocess
import sys

from appliance.cloud.rest import RestClient
from appliance.secrets import Secret


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_the_rest_and_token_clients_import_no_httpx_until_they_are_used() -> None:
    modules = imported_after(
        "from appliance.cloud.rest import RestClient\n"
        "from appliance.cloud.tokens import SharedHttpClient, MintedTokens\n"
        "from appliance.connection.tokens import TokenCoordinator\n"
        "from appliance.spool.uploader import Uploader\n"
        "from appliance.secrets import Secret\n"
        "RestClient('http://127.0.0.1:9', Secret('k' * 32, 'api key'))\n"
        "SharedHttpClient()"
    )
    assert "httpx" not in modules


async def test_a_rest_client_never_used_closes_without_making_one() -> None:
    client = RestClient("http://127.0.0.1:9", Secret("k" * 32, "api key"))
    await client.aclose()
    assert client._http is None


def test_the_agent_and_its_tool_runner_import_no_httpx_until_an_http_tool_runs() -> None:
    modules = imported_after(
        "import asyncio\n"
        "import appliance.agent\n"
        "from appliance.config import ToolConfig\n"
        "from appliance.tools import ToolRunner\n"
        "tool = ToolConfig(name='echo', kind='command', command=['cat'])\n"
        "print(asyncio.run(ToolRunner([tool]).run('echo', {'a': 1})))"
    )
    assert "httpx" not in modules and "appliance.tools" in modules
