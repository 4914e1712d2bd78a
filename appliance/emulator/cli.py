"""``appliance emulator``: run the local AssemblyAI emulator in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

from appliance.emulator.config import DEMO_API_KEY, LOOSE_RATE_ALLOWANCE, EmulatorConfig
from appliance.emulator.server import Emulator


def build_parser() -> argparse.ArgumentParser:
    defaults = EmulatorConfig()  # one place for every default
    parser = argparse.ArgumentParser(
        prog="appliance emulator",
        description=(
            "A strict local emulator of the AssemblyAI APIs on one port: streaming v3 "
            "(/v3/token, /v3/ws), voice agent (/v1/token, /v1/ws), pre-recorded REST (/v2/...), "
            "and fault controls under /_emulator/. Speech is DTMF: digits in, words out."
        ),
    )
    parser.add_argument("--host", default=defaults.host, help="bind address (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=defaults.port, help="TCP port (default: %(default)s)"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help="accepted API key (repeatable; default: the demo key DEMO_API_KEY)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=defaults.time_scale,
        help="multiply server-side durations (token life, session cap, resume window, "
        "inactivity, transcript processing) by this (default: %(default)s)",
    )
    pacing = parser.add_mutually_exclusive_group()
    pacing.add_argument(
        "--rate-allowance",
        type=float,
        default=defaults.rate_allowance,
        help="pacing (streaming and agent): audio may arrive at up to this multiple of the "
        "wall time since Begin / session.ready, plus the lead; above 1.0 is looser than the "
        "documented rule (default: %(default)s)",
    )
    pacing.add_argument(
        "--loose-pacing",
        action="store_const",
        const=LOOSE_RATE_ALLOWANCE,
        dest="rate_allowance",
        help=f"shorthand for --rate-allowance {LOOSE_RATE_ALLOWANCE}: a backlog may be caught "
        "up faster than real time (not what the service promises)",
    )
    parser.add_argument(
        "--max-lead",
        type=float,
        default=defaults.max_lead_s,
        help="pacing: seconds of audio a client may lead wall time by, one maximum-size "
        "frame by default (default: %(default)s)",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=defaults.max_concurrent_sessions,
        help="concurrent sessions before 3009 / concurrency_exceeded (default: %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep uploads and per-session WAV files here (default: a temporary directory)",
    )
    return parser


async def _serve(config: EmulatorConfig) -> None:
    async with Emulator(config) as emu:
        print(f"AssemblyAI emulator on {emu.http_url} (ws: {emu.ws_url})", flush=True)
        if config.api_keys == (DEMO_API_KEY,):
            print(f"API key: {DEMO_API_KEY} (the demo key)", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = EmulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(args.api_keys) if args.api_keys else (DEMO_API_KEY,),
        time_scale=args.time_scale,
        rate_allowance=args.rate_allowance,
        max_lead_s=args.max_lead,
        max_concurrent_sessions=args.max_sessions,
        data_dir=args.data_dir,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
