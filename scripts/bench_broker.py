"""50 devices ask the token broker for tokens at once: latency and throughput.

Starts the emulator (``appliance emulator``) and the broker (``appliance broker
serve``, uvicorn, default limits) as their own processes, enrols the devices in
a JSON store, then runs each simulated device as an asyncio task with its own
:class:`appliance.cloud.tokens.BrokerTokens` (its own HTTP connection, the
device's code path). All start together; each asks for ``--requests`` tokens
in a row, alternating streaming and agent. Latency is per request as the
device sees it; tokens/s is tokens over the wall time of the whole burst.

    nice -n 10 .venv/bin/python scripts/bench_broker.py            # print the section
    nice -n 10 .venv/bin/python scripts/bench_broker.py --write    # and put it in BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.broker import credentials  # noqa: E402
from appliance.broker.store import DeviceRecord, FileStore  # noqa: E402
from appliance.cloud.tokens import BrokerTokens, TokenError  # noqa: E402
from appliance.emulator import DEMO_API_KEY  # noqa: E402
from appliance.secrets import Secret  # noqa: E402

SECTION = "## Token broker"
ALONE_REQUESTS = 10  # within a device's burst (Limits.device_burst)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def device(
    url: str,
    credential: str,
    requests: int,
    start: asyncio.Event,
    latencies: list[float],
    failures: list[str],
) -> None:
    sources = {
        kind: BrokerTokens(url, Secret(credential), kind=kind) for kind in ("streaming", "agent")
    }
    await start.wait()
    for i in range(requests):
        source = sources["streaming" if i % 2 == 0 else "agent"]
        began = time.perf_counter()
        try:
            await source.fetch()
        except TokenError as exc:
            failures.append(type(exc).__name__)
            continue
        latencies.append(time.perf_counter() - began)
    for source in sources.values():
        await source.aclose()


async def burst(url: str, creds: list[str], requests: int) -> tuple[list[float], list[str], float]:
    start = asyncio.Event()
    latencies: list[float] = []
    failures: list[str] = []
    tasks = [
        asyncio.create_task(device(url, c, requests, start, latencies, failures)) for c in creds
    ]
    await asyncio.sleep(0.2)
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return latencies, failures, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--requests", type=int, default=8, help="tokens each device asks for")
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-broker-") as tmp:
        work = Path(tmp)
        store = FileStore(work / "devices.json")
        creds = []
        for i in range(args.devices + 1):  # the last one alone, before the burst
            name, secret = f"device-{i:03d}", credentials.new_secret()
            store.add(
                DeviceRecord(name=name, secret=credentials.hash_secret(secret), created=time.time())
            )
            creds.append(credentials.credential(name, secret))
        key = work / "key"
        key.write_text(DEMO_API_KEY)
        key.chmod(0o600)
        emu_port, broker_port = free_port(), free_port()
        emulator = subprocess.Popen(
            [python, "-m", "appliance", "emulator", "--port", str(emu_port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        broker = subprocess.Popen(
            [
                python,
                "-m",
                "appliance",
                "broker",
                "--store",
                str(work / "devices.json"),
                "serve",
                "--port",
                str(broker_port),
                "--key-file",
                str(key),
                "--base-url",
                f"http://127.0.0.1:{emu_port}",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{emu_port}/v2/transcript")
            wait_http(f"http://127.0.0.1:{broker_port}/healthz")
            url = f"http://127.0.0.1:{broker_port}/token"
            alone, alone_failures, _ = asyncio.run(burst(url, creds[-1:], ALONE_REQUESTS))
            cpu_before = cpu_seconds(broker.pid)
            latencies, failures, wall = asyncio.run(burst(url, creds[:-1], args.requests))
            cpu = cpu_seconds(broker.pid) - cpu_before
            failures += alone_failures
            rss = rss_mb(broker.pid)
        finally:
            for proc in (broker, emulator):
                proc.terminate()
                proc.wait(timeout=15)
    ms = [x * 1000 for x in latencies]
    alone_ms = [x * 1000 for x in alone]
    lines = [
        SECTION,
        "",
        f"Generated by `nice -n 10 .venv/bin/python scripts/bench_broker.py --write` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({cpu_model()}, "
        f"{os.cpu_count()} cores, shared with other work).",
        "",
        f"- Method: `appliance broker serve` (uvicorn, one process, default `Limits`) in front "
        f"of the emulator (its own process), {args.devices} devices enrolled in a JSON store; "
        f"each device an asyncio task in a third process with its own `BrokerTokens` (own "
        f"connection), all started together, each asking {args.requests} tokens in a row "
        f"(streaming and agent alternately). Latency is per request as the device sees it "
        f"(scrypt check, limits, one upstream mint, the answer).",
        "",
        "| devices | tokens | refused | p50 ms | p99 ms | max ms | tokens/s | broker CPU-s "
        "| broker RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {args.devices} | {len(ms)} | {len(failures)} | {statistics.median(ms):.1f} | "
        f"{percentile(ms, 0.99):.1f} | {max(ms):.1f} | {len(ms) / wall:.0f} | {cpu:.2f} | "
        f"{rss:.0f} |",
        "",
        f"- One device alone, {ALONE_REQUESTS} tokens in a row: p50 "
        f"{statistics.median(alone_ms):.1f} ms, first {alone_ms[0]:.1f} ms (new connections "
        f"device -> broker -> emulator, and the scrypt check, about 10 ms here, which only a "
        f"device's first request pays: later ones match a remembered check against the "
        f"record, re-read every time, so a revocation holds at once).",
        "- p99 under the burst is queueing: 400 requests arrive within milliseconds on 2 "
        "cores shared by the broker, the emulator and the 50 clients.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        report = ROOT / "BENCHMARKS.md"
        current = report.read_text()
        start = current.find(f"\n{SECTION}\n")
        if start >= 0:
            end = current.find("\n## ", start + 1)
            current = current[: start + 1] + text + (current[end:] if end >= 0 else "")
        else:
            anchor = current.find("\n## Targets\n")
            if anchor >= 0:
                current = current[: anchor + 1] + text + "\n" + current[anchor + 1 :]
            else:
                current = current.rstrip("\n") + "\n\n" + text
        report.write_text(current)
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main())
