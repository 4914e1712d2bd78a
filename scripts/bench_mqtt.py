#!/usr/bin/env python3
"""What MQTT costs: the client's import and memory, and a fleet's load on one broker.

``--cost`` (the method of ``scripts/bench_web.py``): a fresh interpreter first
imports what the daemon loads anyway (asyncio, json, the websockets client,
httpx, the event feed), then measures the extra import time and resident
memory of the MQTT component (``aiomqtt`` over paho-mqtt), connects it to a
local Mosquitto, sends 100 events and measures memory again.

``--fleet``: one Mosquitto on loopback and N MQTT components (the device's
own ``MqttBridge``, 50 by default) in one process, each fed synthetic events
shaped like a minute of use in each mode; an observer subscribed to ``#``
counts messages and bytes per device, and the broker's CPU is read from
/proc. It checks that every device's retained state is visible.

    nice -n 19 .venv/bin/python scripts/bench_mqtt.py [--runs 5] [--devices 50] [--seconds 30]
        [--write BENCHMARKS.md]

The section goes to stdout, and with ``--write`` into the report (``## MQTT``,
replacing an older one and keeping the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the project's scripts package
    sys.path.insert(0, str(ROOT))

from scripts.bench.report import write_section  # noqa: E402

_CHILD = r"""
import asyncio, json, sys, time

def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

import websockets.asyncio.client  # the daemon has this already for the cloud
import httpx  # ditto
from appliance.config import MqttConfig  # the daemon's own modules, loaded anyway
from appliance.events import EventBus, TurnFinal
from appliance.protocol.retry import RetryLimits
base_rss = rss_kib()
t0 = time.perf_counter()
from appliance.mqtt.bridge import MqttBridge
import_ms = (time.perf_counter() - t0) * 1000
import_rss = rss_kib()

async def main():
    import tempfile
    from pathlib import Path
    bus = EventBus()
    settings = MqttConfig(enabled=True, host="127.0.0.1", port=int(sys.argv[1]))
    bridge = MqttBridge(settings, bus, device_id="cost", state_dir=Path(tempfile.mkdtemp()),
                        version="0", retry=RetryLimits())
    task = asyncio.create_task(bridge.run())
    await asyncio.wait_for(bridge.connected.wait(), 10)
    for i in range(100):
        bus.publish(TurnFinal(session_id="s", turn_order=i, text="one two three"))
    while bridge._outbox:
        await asyncio.sleep(0.01)
    serving_rss = rss_kib()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    print(json.dumps({"import_ms": import_ms, "import_kib": import_rss - base_rss,
                      "serving_kib": serving_rss - base_rss}))

asyncio.run(main())
"""


@contextlib.contextmanager
def mosquitto() -> Iterator[tuple[int, int]]:
    """An anonymous loopback Mosquitto for the benchmark: (port, pid)."""
    if shutil.which("mosquitto") is None:
        sys.exit("mosquitto is not installed (scripts/bootstrap.sh --test installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nlog_dest none\n")  # fmt: skip
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)])
        try:
            deadline = time.monotonic() + 5
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            yield port, proc.pid
        finally:
            proc.kill()
            proc.wait()


def cost(runs: int) -> str:
    with mosquitto() as (port, _):
        results = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(port)],
                check=True,
                capture_output=True,
                text=True,
                timeout=60,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return (f"| aiomqtt {_version('aiomqtt')} over paho-mqtt {_version('paho-mqtt')} "
            f"| {med['import_ms']:.0f} | {med['import_kib'] / 1024:.1f} "
            f"| {med['serving_kib'] / 1024:.1f} |")  # fmt: skip


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


# ---------------------------------------------------------------- the fleet


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(mode: str, bus, seconds: float, rng: random.Random) -> None:  # type: ignore[no-untyped-def]
    """A minute of use, scaled to ``seconds``: one session, its turns, the level."""
    from appliance import events as ev

    await asyncio.sleep(rng.uniform(0, 2))  # devices are not in lockstep
    scale = seconds / 60.0
    sid = f"s{rng.randrange(1 << 30)}"
    bus.publish(ev.SessionPhase(phase="started", mode=mode, session_id=sid))
    state = {"live": "listening", "agent": "listening", "record": "recording"}[mode]
    bus.publish(ev.StateChanged(state="connecting", mode=mode))
    bus.publish(ev.StateChanged(state=state, mode=mode))
    text = "the quarterly numbers are in and they look better than expected"
    for i in range(12):  # one turn every 5 s of the minute
        await asyncio.sleep(5 * scale)
        bus.publish(ev.MicLevel(dbfs=rng.uniform(-50, -20)))
        if mode == "live":
            bus.publish(ev.TurnFinal(session_id=sid, turn_order=i, text=text))
        elif mode == "agent" and i % 2 == 0:
            bus.publish(ev.AgentUser(text=text, final=True))
            bus.publish(ev.StateChanged(state="agent_speaking", mode=mode))
            bus.publish(ev.AgentReply(text=text, reply_id=f"r{i}"))
            bus.publish(ev.StateChanged(state="listening", mode=mode))
    account = {"captured_seconds": 60.0, "lost_seconds": 0.0}
    bus.publish(ev.SessionPhase(phase="ended", mode=mode, session_id=sid, account=account))
    bus.publish(ev.StateChanged(state="idle", mode=mode, detail=mode))
    if mode == "record":
        bus.publish(ev.SpoolStatus(waiting=1, bytes=1_920_000, states={"ready": 1}))
        bus.publish(ev.RecordingTranscript(recording_id=sid, transcript_id="t" + sid,
                                           origin="record", text=text * 12))  # fmt: skip
        bus.publish(ev.SpoolStatus(waiting=0, bytes=1_920_000, states={"completed": 1}))


async def fleet(devices: int, seconds: float) -> list[str]:
    import aiomqtt

    from appliance import events as ev
    from appliance.config import MqttConfig
    from appliance.mqtt.bridge import MqttBridge
    from appliance.protocol.retry import RetryLimits

    rng = random.Random(7)
    out: list[str] = []
    with mosquitto() as (port, pid), tempfile.TemporaryDirectory() as tmp:
        counts: dict[str, list[int]] = {}
        observer = aiomqtt.Client("127.0.0.1", port)
        async with observer:
            await observer.subscribe("#", qos=1)

            async def count() -> None:
                async for m in observer.messages:
                    payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                    parts = str(m.topic).split("/")
                    dev = parts[1] if parts[0] == "appliance" else parts[2]
                    c = counts.setdefault(dev, [0, 0])
                    c[0] += 1
                    c[1] += len(payload) + len(str(m.topic))

            counter = asyncio.create_task(count())
            buses, tasks = [], []
            for n in range(devices):
                bus = ev.EventBus()
                settings = MqttConfig(enabled=True, host="127.0.0.1", port=port)
                settings.level_interval_seconds *= seconds / 60  # the minute is scaled
                bridge = MqttBridge(settings, bus, device_id=f"dev{n:02d}",
                                    state_dir=Path(tmp) / str(n), version="0.1.0",
                                    retry=RetryLimits())  # fmt: skip
                (Path(tmp) / str(n)).mkdir()
                bus.publish(ev.idle("live"))
                buses.append((bus, bridge))
                tasks.append(asyncio.create_task(bridge.run()))
            await asyncio.gather(*(b.connected.wait() for _, b in buses))
            await asyncio.sleep(1.0)
            counts.clear()  # connect-time traffic (discovery, state) reported apart below
            out.append(
                f"| mode | messages/min | bytes/min | broker CPU % ({devices} devices, "
                f"a minute in {seconds:.0f} s) | broker CPU-ms per device-minute |"
            )
            out.append("|---|---|---|---|---|")
            for mode in ("live", "agent", "record"):
                counts.clear()
                cpu0, t0 = _cpu_seconds(pid), time.monotonic()
                await asyncio.gather(*(_drive(mode, bus, seconds, rng) for bus, _ in buses))
                await asyncio.sleep(1.0)
                cpu, wall = _cpu_seconds(pid) - cpu0, time.monotonic() - t0
                msgs = sum(c[0] for c in counts.values()) / devices
                size = sum(c[1] for c in counts.values()) / devices
                out.append(f"| {mode} | {msgs:.0f} | {size:,.0f} | {100 * cpu / wall:.1f} "
                           f"| {1000 * cpu / devices / (seconds / 60):.1f} |")  # fmt: skip
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            counter.cancel()
        # Every device's state is visible to a newcomer (retained).
        seen: set[str] = set()
        late = aiomqtt.Client("127.0.0.1", port)
        async with late:
            await late.subscribe("appliance/+/state", qos=1)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    async for m in late.messages:
                        seen.add(str(m.topic).split("/")[1])
                        if len(seen) == devices:
                            break
        out += ["", f"Retained state visible to a newcomer for {len(seen)}/{devices} devices."]
    from appliance.mqtt.discovery import discovery_messages
    from appliance.mqtt.topics import Topics

    configs = discovery_messages("homeassistant", "dev00", Topics("appliance/dev00"), "0.1.0")
    size = sum(len(m.topic) + len(m.payload) for m in configs)
    out.append(f"At each connect a device also sends its availability, {len(configs)} discovery "
               f"configs ({size:,} bytes) and its retained state (about 10 messages).")  # fmt: skip
    return out


#: The section of BENCHMARKS.md this script owns (replaced on each --write).
SECTION = "## MQTT"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0, help="one mode's scaled minute")
    parser.add_argument("--write", type=Path, help="put the MQTT section into this report")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        SECTION, "",
        f"`nice -n 19 .venv/bin/python scripts/bench_mqtt.py` on {started}; Mosquitto "
        f"{_mosquitto_version()} on loopback.", "",
        "Import and memory, measured as `scripts/bench_web.py` does (extra over what the daemon "
        f"loads anyway; median of {args.runs} fresh interpreters):", "",
        "| client | import ms | import MiB | connected, 100 events sent, MiB |",
        "|---|---|---|---|",
        cost(args.runs), "",
        f"Fleet: {args.devices} MQTT components (the daemon's `MqttBridge`, synthetic events) on "
        "one broker; each runs a minute of use per mode (one session, a turn or an exchange "
        f"every 5 s, the level every 10 s) scaled into {args.seconds:.0f} s and reported per "
        "minute; discovery and state at connect not included. Bytes are topic + payload.", "",
    ]  # fmt: skip
    lines += asyncio.run(fleet(args.devices, args.seconds))
    print("\n".join(lines))
    if args.write:
        write_section(args.write, lines, SECTION)


def _mosquitto_version() -> str:
    out = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout
    return out.split("version", 1)[1].split()[0] if "version" in out else "?"


if __name__ == "__main__":
    main()
