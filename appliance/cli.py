"""The ``appliance`` command line.

Each subcommand imports only what it needs, so ``appliance check`` or
``appliance spool list`` start fast on a Pi and the daemon never loads the
emulator or test-only code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypedDict

# Before anything imports numpy: the daemon does no linear algebra, and each
# OpenBLAS worker thread (one per core) is a thread and a buffer for nothing.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from appliance import __version__
from appliance.exitcodes import ExitCode

if TYPE_CHECKING:
    from appliance.config import Config

log = logging.getLogger("appliance")

#: Who may read what the daemon creates: its own user only. Transcripts, conversations and
#: spooled audio hold what was said; the unit's UMask= says the same, and this holds for a
#: daemon started by hand, by root or from a login shell with a lax umask.
DAEMON_UMASK = 0o077

EPILOG = """\
exit codes:
  0  success
  1  runtime failure (see the log)
  2  usage error (bad arguments)
  3  configuration error (the message names file, line and key)
  4  a component is missing (e.g. the dev extra for the emulator)
  5  check: a preflight check failed (appliance check)
  6  check: offline (endpoints unreachable; recordings will be kept)
  130 interrupted (Ctrl-C)

The configuration is read from --config FILE, then $APPLIANCE_CONFIG, then
/etc/appliance/config.yaml; without any of them the built-in defaults apply.
"""


class _Default(TypedDict, total=False):
    default: str


def _add_config(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    # Nested subcommands accept the options too ("spool list --config F"); SUPPRESS keeps
    # them from overwriting a value given before the nested command.
    default: _Default = {"default": argparse.SUPPRESS} if nested else {}
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="configuration file (YAML)", **default
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at DEBUG level", **default
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appliance",
        description="Raspberry Pi voice appliance on AssemblyAI: live transcription, "
        "voice agent and field recording, one button.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int], config: bool = True
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if config:
            _add_config(p)
        p.set_defaults(handler=handler)
        return p

    p = command("run", "Run the daemon (what systemd starts at boot).", _run)
    p.add_argument("--mode", choices=("live", "agent", "record"), help="override the mode")
    p.add_argument(
        "--journal",
        action="store_true",
        default=None,
        help="log to journald even when not started by systemd",
    )

    p = command(
        "demo",
        "Run the appliance end to end on this machine: a local emulator of the "
        "cloud, sample microphone audio (DTMF digits) and a simulated button press. "
        "Needs the dev extra.",
        _demo,
    )
    p.add_argument(
        "--mode",
        choices=("live", "agent", "record"),
        default=None,
        help="demo only this mode (default: every mode in turn)",
    )
    p.add_argument("--digits", default="1 2 3 4 5", help="what the sample audio 'says'")
    p.add_argument(
        "--broker",
        action="store_true",
        help="give the key only to a local token broker (broker extra); the device "
        "holds just its credential",
    )
    p.add_argument(
        "--exports",
        metavar="DIR",
        default=None,
        help="write the live session's and the recording's TXT/MD/SRT/VTT/JSON exports here "
        "(default: a new temporary directory, kept)",
    )

    command(
        "emulator",
        "Run the local AssemblyAI API emulator (dev extra). "
        "All further arguments go to it; see 'appliance emulator --help'.",
        _emulator,
        config=False,
    ).add_argument("args", nargs=argparse.REMAINDER)

    command(
        "devices",
        "List audio input/output devices with usable rates and channels; mark "
        "the ones the configuration selects.",
        _devices,
    )

    p = command(
        "check",
        "Preflight for whoever sets the device up: config, credential, "
        "microphone level, speaker, GPIO, endpoints, spool.",
        _check,
    )
    p.add_argument("--tone", action="store_true", help="play a short test tone")
    p.add_argument(
        "--loopback",
        action="store_true",
        help="play DTMF through the speaker and decode it from the microphone: latency, "
        "echo, clipping, noise floor, and the agent.echo to use",
    )
    p.add_argument("--seconds", type=float, default=2.0, help="how long to show the mic level")

    p = command("spool", "Inspect and manage recordings waiting for transcription.", _spool)
    spool_sub = p.add_subparsers(dest="spool_command", metavar="ACTION", required=True)
    listing = spool_sub.add_parser(
        "list", help="recordings, deliveries and summaries with state, age and attempts"
    )
    retry = spool_sub.add_parser(
        "retry",
        help="retry a failed recording, delivery or summary (a summary whose outcome is "
        "unknown may be charged twice)",
    )
    retry.add_argument("id", nargs="?", help="recording id, or a live session's id (its summary)")
    retry.add_argument(
        "--all",
        action="store_true",
        help="retry every failed recording, delivery and summary (not a summary whose "
        "outcome is unknown: give its id)",
    )
    purge = spool_sub.add_parser("purge", help="delete the audio of completed recordings")
    purge.add_argument(
        "--completed",
        action="store_true",
        required=True,
        help="only completed recordings (their transcripts are kept)",
    )

    for nested in (listing, retry, purge):
        _add_config(nested, nested=True)

    p = command(
        "sessions",
        "Past live sessions and recordings: list them, show one, export it as "
        "TXT, Markdown, SRT, VTT or JSON.",
        _sessions,
    )
    from appliance.history.cli import add_arguments as add_sessions_arguments

    for nested in add_sessions_arguments(p):
        _add_config(nested, nested=True)

    p = command(
        "transcribe", "Upload one audio file now, show progress, print the transcript.", _transcribe
    )
    p.add_argument("file", help="audio file (WAV)")
    p.add_argument("--json", action="store_true", help="print the transcript JSON")

    p = command(
        "broker",
        "The fleet's token broker (broker extra): holds the AssemblyAI key and hands each "
        "enrolled device single-use tokens. Without an action it serves; add-device, "
        "revoke and list manage the devices' credentials.",
        _broker,
        config=False,
    )
    from appliance.broker.cli import add_arguments

    add_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        # The emulator parses its own arguments, --help included.
        return _emulator(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    from appliance.logs import setup_logging

    if args.command != "emulator":
        setup_logging(
            "DEBUG" if getattr(args, "verbose", False) else "INFO",
            journal=getattr(args, "journal", None),
        )
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except _ConfigFailure as failure:
        print(failure, file=sys.stderr)
        return ExitCode.CONFIG


class _ConfigFailure(Exception):
    pass


def load(args: argparse.Namespace, *, resolve_secrets: bool = True) -> Config:
    """Load the configuration named by the arguments; exit code 3 with every problem if broken."""
    from appliance.config import ConfigError, find_config_path, load_config
    from appliance.logs import setup_logging

    try:
        config = load_config(find_config_path(args.config), resolve_secrets=resolve_secrets)
    except ConfigError as exc:
        raise _ConfigFailure(f"configuration error:\n{exc}") from None
    if not getattr(args, "verbose", False):
        setup_logging(config.logging.level, journal=getattr(args, "journal", None))
    for warning in config.warnings:
        log.warning("%s", warning)
    return config


def _run(args: argparse.Namespace) -> int:
    config = load(args)
    if args.mode:
        config.mode = args.mode
    os.umask(DAEMON_UMASK)
    from appliance.app import run_daemon

    return run_daemon(config)


def _demo(args: argparse.Namespace) -> int:
    try:
        from appliance.demo import run_demo
    except ImportError as exc:  # the emulator needs the dev extra
        print(
            f"appliance demo needs the dev extra ({exc.name} missing): "
            "pip install 'appliance[dev]'",
            file=sys.stderr,
        )
        return ExitCode.MISSING_COMPONENT
    return run_demo(args)


def _emulator(args: argparse.Namespace) -> int:
    try:
        from appliance.emulator.cli import main as emulator_main
    except ImportError as exc:
        print(
            f"the emulator needs the dev extra ({exc.name} missing): pip install 'appliance[dev]'",
            file=sys.stderr,
        )
        return ExitCode.MISSING_COMPONENT
    return emulator_main(args.args)


def _devices(args: argparse.Namespace) -> int:
    config = load(args, resolve_secrets=False)
    from appliance.audio.devices import devices_command

    return devices_command(config.audio.input_device, config.audio.output_device)


def _check(args: argparse.Namespace) -> int:
    from appliance.check import run_check

    return run_check(args)


def _spool(args: argparse.Namespace) -> int:
    config = load(args, resolve_secrets=False)
    from appliance.spool_commands import spool_command

    return spool_command(config, args)


def _sessions(args: argparse.Namespace) -> int:
    config = load(args, resolve_secrets=False)
    from appliance.history.cli import sessions_command

    return sessions_command(config, args)


def _transcribe(args: argparse.Namespace) -> int:
    config = load(args)
    from appliance.spool_commands import transcribe_command

    return transcribe_command(config, args)


def _broker(args: argparse.Namespace) -> int:
    from appliance.broker.cli import broker_command

    return broker_command(args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
