#!/usr/bin/env python3
"""What the local web page costs: import time and memory, ours against aiohttp.

Each candidate runs in a fresh interpreter that first imports what the daemon
loads anyway (asyncio, json and the websockets client used for the cloud), then
measures the extra import time and resident memory of the web server, starts
it, serves the page and one live feed client, and measures memory again.

    .venv/bin/python scripts/bench_web.py [--runs 5]

Figures are medians over the runs; run it on the target device for real numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CANDIDATES = ("websockets", "aiohttp")

_CHILD = r"""
import asyncio, json, sys, time

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

import websockets.asyncio.client  # the daemon has this already for the cloud
import httpx  # ditto (token minting, REST); also our test client below
from appliance.config import WebConfig  # the daemon's own modules, loaded anyway
from appliance.events import EventBus, TurnPartial
client = httpx.AsyncClient()  # its TLS context is client-side cost, not the server's
base_rss = rss_kib()
candidate = sys.argv[1]
t0 = time.perf_counter()
if candidate == "websockets":
    from appliance.web import WebServer
else:
    import aiohttp.web
import_ms = (time.perf_counter() - t0) * 1000
import_rss = rss_kib()

PAGE = b"<!doctype html><title>x</title>" + b"x" * 8000

async def serve_websockets():
    bus = EventBus()
    server = WebServer(WebConfig(enabled=True, port=0), bus, lambda: {"state": "idle"}, None)
    await server.start()
    return server.port, bus.publish, server.stop

async def serve_aiohttp():
    bus = EventBus()
    async def page(request):
        return aiohttp.web.Response(body=PAGE, content_type="text/html")
    async def feed(request):
        ws = aiohttp.web.WebSocketResponse()
        await ws.prepare(request)
        sent = 0
        async for published in bus.subscribe():
            await ws.send_str(json.dumps(published.event.to_dict()))
            sent += 1
            if sent == 100:  # the client hangs up after 100; don't wait for another event
                break
        return ws
    app = aiohttp.web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/feed", feed)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return port, bus.publish, runner.cleanup

async def main():
    serve = serve_websockets if candidate == "websockets" else serve_aiohttp
    port, publish, stop = await serve()
    async with client:
        for _ in range(20):
            (await client.get(f"http://127.0.0.1:{port}/")).raise_for_status()
    async with websockets.asyncio.client.connect(f"ws://127.0.0.1:{port}/feed") as ws:
        for i in range(100):
            publish(TurnPartial(session_id="s", turn_order=i, text="one two three"))
        got = 0
        while got < 100:
            message = json.loads(await ws.recv())
            got += message["kind"] == "turn.partial"
        serving_rss = rss_kib()
    await stop()
    print(json.dumps({
        "import_ms": import_ms,
        "import_kib": import_rss - base_rss,
        "serving_kib": serving_rss - base_rss,
    }))

asyncio.run(main())
"""


def run(candidate: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, candidate],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'server':<12}{'import ms':>11}{'import KiB':>12}{'serving KiB':>13}  (extra, median)")
    for candidate in CANDIDATES:
        runs = [run(candidate) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{candidate:<12}{med['import_ms']:>11.1f}{med['import_kib']:>12.0f}"
            f"{med['serving_kib']:>13.0f}"
        )


if __name__ == "__main__":
    main()
