"""``appliance broker``: serve tokens (the default), or manage the devices' credentials."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.exitcodes import ExitCode

if TYPE_CHECKING:
    from appliance.broker.store import DeviceStore

log = logging.getLogger("appliance.broker")

STORE_ENV = "APPLIANCE_BROKER_STORE"
#: Where the store is without --store or $APPLIANCE_BROKER_STORE: the unit's StateDirectory.
DEFAULT_STORE = Path("/var/lib/appliance-broker/devices.sqlite3")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``appliance broker``'s options and actions (called by :mod:`appliance.cli`)."""
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="device store: *.sqlite3/*.db is SQLite, anything else a JSON file "
        f"(default ${STORE_ENV}, else {DEFAULT_STORE})",
    )
    sub = parser.add_subparsers(dest="broker_command", metavar="ACTION")
    serve = sub.add_parser("serve", help="serve tokens (what the unit runs; the default)")
    add_serve_arguments(serve)
    add = sub.add_parser("add-device", help="enrol a device; prints its credential once")
    add.add_argument("name", help="device name (letters, digits, - and _; at most 64)")
    add.add_argument(
        "--max-session-seconds",
        type=int,
        default=None,
        help="cap of the device's sessions (60..10800; default the broker's)",
    )
    sub.add_parser("list", help="devices with their state")
    revoke = sub.add_parser("revoke", help="refuse a device from now on")
    revoke.add_argument("name")
    add_serve_arguments(parser)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    default = argparse.SUPPRESS if parser.prog.endswith(" serve") else None
    parser.add_argument("--host", default=default or "127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=default or 8765, help="listen port")
    parser.add_argument(
        "--key-file",
        type=Path,
        default=default,
        help="file with the AssemblyAI key (default: the systemd credential "
        "assemblyai-api-key, else $ASSEMBLYAI_API_KEY)",
    )
    parser.add_argument(
        "--admin-token-file",
        type=Path,
        default=default,
        help="bearer token that /metrics and /fleet require (default: the "
        "credential broker-admin-token if present, else open)",
    )
    parser.add_argument("--region", choices=("us", "eu", "edge"), default=default or "us")
    parser.add_argument(
        "--base-url", default=default, help="one server for every API (the local emulator)"
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default=default or "127.0.0.1",
        help="proxies whose X-Forwarded-For is believed",
    )


def store_path(args: argparse.Namespace) -> Path:
    if args.store is not None:
        return Path(args.store)
    env = os.environ.get(STORE_ENV)
    return Path(env) if env else DEFAULT_STORE


def broker_command(args: argparse.Namespace) -> int:
    """Run one action; the store and the server are imported only here (a fast CLI)."""
    from appliance.broker.store import StoreError, open_store

    action = args.broker_command or "serve"
    try:
        if action == "serve":
            return _serve(args)
        store = open_store(store_path(args))
        if action == "add-device":
            return _add(store, args)
        if action == "revoke":
            if not store.revoke(args.name, time.time()):
                print(f"no active device {args.name!r}", file=sys.stderr)
                return ExitCode.FAILURE
            print(f"revoked {args.name}")
            return ExitCode.OK
        return _list(store)
    except StoreError as exc:
        print(f"appliance broker: {exc}", file=sys.stderr)
        return ExitCode.FAILURE


def _add(store: DeviceStore, args: argparse.Namespace) -> int:
    from appliance.broker import credentials
    from appliance.broker.store import DeviceRecord

    name = args.name
    if not credentials.valid_name(name):
        print(
            f"device name {name!r}: letters, digits, - and _ only, 1..64 of them", file=sys.stderr
        )
        return ExitCode.USAGE
    limit = args.max_session_seconds
    if limit is not None and not 60 <= limit <= 10800:
        print("--max-session-seconds must be in 60..10800", file=sys.stderr)
        return ExitCode.USAGE
    secret = credentials.new_secret()
    record = DeviceRecord(
        name=name,
        secret=credentials.hash_secret(secret),
        created=time.time(),
        max_session_seconds=limit,
    )
    store.add(record)
    # The only time the credential exists outside the device: stdout, nothing else.
    print(credentials.credential(name, secret))
    print(f"enrolled {name}; the line above is its credential, shown only now", file=sys.stderr)
    return ExitCode.OK


def _list(store: DeviceStore) -> int:
    records = store.all()
    print(f"{'device':24} {'state':8} {'max session':>11}  enrolled (UTC)")
    for r in records:
        state = "active" if r.active else "revoked"
        limit = str(r.max_session_seconds or "default")
        enrolled = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created))
        print(f"{r.name:24} {state:8} {limit:>11}  {enrolled}")
    return ExitCode.OK


def _serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        print(
            "appliance broker needs the broker extra: pip install 'appliance[broker]'",
            file=sys.stderr,
        )
        return ExitCode.MISSING_COMPONENT
    from appliance.broker.server import (
        ADMIN_CREDENTIAL,
        KEY_CREDENTIAL,
        KEY_ENV,
        SecretMissing,
        ServeOptions,
        build_app,
        read_secret,
        serve,
        upstream_urls,
    )

    try:
        key = read_secret(args.key_file, KEY_CREDENTIAL, env=KEY_ENV, what="the AssemblyAI key")
        admin = read_secret(args.admin_token_file, ADMIN_CREDENTIAL, what="the admin token")
    except SecretMissing as exc:
        print(f"appliance broker: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    if key is None:
        print(
            "appliance broker: no AssemblyAI key (--key-file, the systemd credential "
            f"{KEY_CREDENTIAL}, or ${KEY_ENV})",
            file=sys.stderr,
        )
        return ExitCode.CONFIG
    from appliance.broker.store import open_store

    store = open_store(store_path(args), read_only=True)
    app = build_app(store, key, upstream_urls(args.region, args.base_url), admin_token=admin)
    log.info(
        "broker: %d devices in %s; listening on %s:%d",
        len(store.all()),
        store_path(args),
        args.host,
        args.port,
    )
    serve(
        app,
        ServeOptions(host=args.host, port=args.port, forwarded_allow_ips=args.forwarded_allow_ips),
    )
    return ExitCode.OK
