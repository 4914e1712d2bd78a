"""A small driver of the spool for crash tests and manual checks (not used by the daemon).

``python -m appliance.spool.tool --spool DIR --url URL [--record DIGITS] [--upload]``
opens the spool as its owner (running crash recovery), optionally records a
DTMF clip into it at a chosen pace (printing ``durable <id> <samples>`` after
each sync, so a test that kills this process knows what must survive), then
optionally drains the uploader. The API key comes from $ASSEMBLYAI_API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from appliance import dtmf
from appliance.cloud.rest import RestClient, RestTimeouts
from appliance.config import UploadConfig
from appliance.secrets import Secret
from appliance.spool.spool import Spool, SpoolParams
from appliance.spool.uploader import Uploader

RATE = 16000


def _upload_config(poll: float) -> UploadConfig:
    """The daemon's defaults, polled fast and retried patiently for the crash tests."""
    return UploadConfig(poll_seconds=poll, write_timeout_seconds=30.0, max_attempts=50)


def record(spool: Spool, digits: str, chunk_ms: int, pace: float) -> None:
    audio = dtmf.generate(digits, RATE)
    chunk = RATE * chunk_ms // 1000
    writer = spool.open_recording("record", RATE)
    print(f"opened {writer.id}", flush=True)
    last = -1
    for start in range(0, len(audio), chunk):
        writer.write(audio[start : start + chunk])
        if writer.durable_samples != last:
            last = writer.durable_samples
            print(f"durable {writer.id} {last}", flush=True)
        time.sleep(pace)
    writer.close()
    print(f"closed {writer.id} {writer.samples_written}", flush=True)


async def upload(spool: Spool, url: str, timeout: float, poll: float) -> None:
    key = Secret(os.environ["ASSEMBLYAI_API_KEY"])
    timeouts = RestTimeouts(connect=2, read=5, write=10, pool=2)
    async with RestClient(url, key, timeouts=timeouts) as client:
        uploader = Uploader(
            spool, client, _upload_config(poll), retry_base=0.05, retry_cap=0.5,
            probe_base=0.05, probe_cap=0.5,
        )  # fmt: skip
        await uploader.drain(timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m appliance.spool.tool")
    p.add_argument("--spool", required=True, type=Path)
    p.add_argument("--url", required=True)
    p.add_argument("--record", metavar="DIGITS")
    p.add_argument("--upload", action="store_true")
    p.add_argument("--chunk-ms", type=int, default=100)
    p.add_argument("--pace", type=float, default=0.02, help="seconds slept per chunk")
    p.add_argument("--sync", type=float, default=0.1, help="sync interval")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--poll", type=float, default=0.05)
    args = p.parse_args(argv)
    params = SpoolParams(
        directory=args.spool,
        quota_bytes=100_000_000,
        min_free_bytes=0,
        segment_seconds=1.0,
        sync_interval_seconds=args.sync,
    )
    spool = Spool(params)
    print("spool open", flush=True)
    if args.record:
        record(spool, args.record, args.chunk_ms, args.pace)
    if args.upload:
        asyncio.run(upload(spool, args.url, args.timeout, args.poll))
        print("drained", flush=True)
    spool.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
