"""``appliance demo``: the whole appliance end to end on one machine.

It starts the local AssemblyAI emulator in-process, makes microphone audio
that "says" a few DTMF digits (the emulator's recogniser turns them into the
words "one", "two"...), and runs the real daemon on it once per mode, with
simulated button presses:

- live: press, the digits are spoken, press; turns appear as they arrive, each
  with its speaker (``speaker_labels``: the emulator alternates A and B), and
  after the first turn the page's retune control sets a key term (the last
  digit's word in capitals) that the later turns are spelled with, on the same
  connection (``UpdateConfiguration``, no reconnect);
- record: the same, then the recording is uploaded and transcribed;
- after the live and the record run, the session and the recording are exported
  (TXT, Markdown, SRT, VTT and JSON, as ``appliance sessions export`` makes them)
  into ``--exports DIR`` (default: a new temporary directory that is kept);
- agent: press, the greeting plays, then the digits are the question (half
  duplex silences what is said over the greeting, as on a device), the agent's
  reply is "heard" in the speaker file, a long press ends the conversation.

Everything the daemon does here it does on a device: only the microphone is a
paced WAV file, the speaker a WAV file and the cloud the emulator. It exits 0
when every mode returned exactly the digits that were spoken.

With ``--broker`` (the broker extra) the key is given only to a token broker
(:mod:`appliance.broker`) started in front of the emulator: the device is
enrolled, holds only its credential file, and takes every token from the
broker, and its recordings go through the broker's pre-recorded proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from appliance import dtmf
from appliance.app import Appliance
from appliance.config import Config, load_config
from appliance.daemon import Daemon
from appliance.events import (
    AgentReply,
    AgentUser,
    Event,
    EventBus,
    Published,
    SpoolStatus,
    SummaryStored,
    TurnFinal,
    TurnPartial,
)
from appliance.exitcodes import ExitCode
from appliance.secrets import Secret, register_secret

log = logging.getLogger("appliance.demo")

MIC_RATE = 48000  # what a USB microphone typically runs at
LEAD_SECONDS = 2.0  # silence before the digits: the press comes inside it
PRESS_BEFORE_SPEECH = 0.3  # the press lands just before speech; the pre-roll covers it
# Agent mode: the press starts the start earcon (0.12 s) and the greeting ('0': 0.32 s),
# and half duplex silences what the microphone captures while they sound (plus
# audio.echo_tail_ms), so the question is asked once they have sounded out, as a user
# does (measured at the FileSink: sounding until 0.45 s after the press; the rest is room
# for the connection).
AGENT_PRESS_BEFORE_SPEECH = 1.0
TRAIL_SECONDS = 2.0  # silence after the digits, so the last turn can end
UPLOAD_TIMEOUT = 60.0
AGENT_TIMEOUT = 30.0
SUMMARY_TIMEOUT = 30.0
#: The modes whose session or recording is exported (the agent keeps no transcript).
EXPORTED_MODES = frozenset({"live", "record"})

WORDS = {
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "zero": "0",
    "star": "*",
    "pound": "#",
}


def words_to_digits(text: str) -> str:
    """'One two three.' -> '123' (the emulator's recogniser speaks digits as words)."""
    out = []
    for word in text.lower().replace(".", " ").replace(",", " ").split():
        if word in WORDS:
            out.append(WORDS[word])
    return "".join(out)


@dataclass
class ModeResult:
    mode: str
    expected: str
    got: str = ""
    detail: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # beyond the digits
    summaries: list[str] = field(default_factory=list)  # the LLM Gateway's, as stored

    @property
    def ok(self) -> bool:
        return self.got == self.expected and not self.problems


def run_demo(args: argparse.Namespace) -> int:
    """Entry point of ``appliance demo``."""
    digits = "".join(ch for ch in args.digits if ch in "0123456789")
    if not digits:
        print("--digits needs at least one digit", file=sys.stderr)
        return ExitCode.USAGE
    modes = [args.mode] if args.mode else ["live", "record", "agent"]
    logging.getLogger("appliance").setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
    exports = getattr(args, "exports", None)
    return asyncio.run(
        _demo(
            digits,
            modes,
            args.config,
            broker=getattr(args, "broker", False),
            exports_dir=Path(exports) if exports else None,
        )
    )


async def _demo(
    digits: str,
    modes: list[str],
    config_path: str | None,
    *,
    broker: bool = False,
    work_dir: Path | None = None,
    exports_dir: Path | None = None,
) -> int:
    """``work_dir`` (tests) keeps the device's and the broker's files; else a temporary one.
    The exports go to ``exports_dir``, else to a temporary directory left in place."""
    from appliance.emulator import DEMO_API_KEY, EmulatorThread

    results: list[ModeResult] = []
    if exports_dir is None and EXPORTED_MODES.intersection(modes):
        exports_dir = Path(tempfile.mkdtemp(prefix="appliance-demo-exports-"))
    with contextlib.ExitStack() as stack:
        tmp = work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="appliance-demo-"))
        emulator = stack.enter_context(EmulatorThread(time_scale=0.1))
        work = Path(tmp)
        credential_file: Path | None = None
        broker_base: str | None = None
        if broker:
            from appliance.broker.local import local_broker

            running = stack.enter_context(
                local_broker(emulator.http_url, DEMO_API_KEY, work / "owner")
            )
            credential_file = running.credential_files["device-1"]
            broker_base = running.thread.base_url
            print(
                f"appliance demo: token broker on {running.url} holds the key; "
                "the device holds only its credential\n"
            )
        # Live and record hear one turn per digit; the agent hears one question.
        mics = {}
        for name, spoken in (("turns", " ".join(digits)), ("question", digits)):
            mics[name] = work / f"microphone-{name}.wav"
            audio = dtmf.generate(
                spoken,
                MIC_RATE,
                lead_ms=int(LEAD_SECONDS * 1000),
                trail_ms=int(TRAIL_SECONDS * 1000),
            )
            dtmf.write_wav(mics[name], audio, MIC_RATE)
        emulator.set_agent_script(greeting_digits="0", reply_digits=None)
        print(
            f"appliance demo: emulator on {emulator.http_url}; the microphone (a {MIC_RATE} Hz "
            f"WAV) says the DTMF digits {' '.join(digits)!r}\n"
        )
        for mode in modes:
            mic = mics["question" if mode == "agent" else "turns"]
            config = _demo_config(config_path, emulator.http_url, DEMO_API_KEY, work, mode, mic)
            if credential_file is not None and broker_base is not None:
                _use_broker(config, broker_base, credential_file)
            print(f"--- {mode}: press, speak, stop")
            result = await _run_mode(config, mode, digits, exports_dir)
            results.append(result)
            print(
                f"    {'OK ' if result.ok else 'FAIL'} said {result.expected}, "
                f"got {result.got or '(nothing)'}\n"
            )
    if exports_dir is not None and EXPORTED_MODES.intersection(modes):
        print(f"exports kept in {exports_dir}")
    print("summary: " + ", ".join(f"{r.mode} {'ok' if r.ok else 'FAILED'}" for r in results))
    return ExitCode.OK if all(r.ok for r in results) else ExitCode.FAILURE


def _demo_config(
    path: str | None, base_url: str, key: str, work: Path, mode: str, mic: Path
) -> Config:
    config = load_config(path, resolve_secrets=False) if path else Config()
    config.mode = mode
    config.state_dir = work / f"state-{mode}"
    config.endpoints.base_url = base_url
    config.audio.source = "file"
    config.audio.input_file = mic
    config.audio.sink = "file"
    config.audio.output_file = work / f"speaker-{mode}.wav"
    config.button.enabled = False
    config.button.keyboard = False
    config.upload.poll_seconds = 0.2
    config.summary.enabled = True  # a summary of the live session and of the recording
    config.live.speaker_labels = True
    config.api_key = register_secret(Secret(key, source="demo"))
    return config


def _use_broker(config: Config, broker_base: str, credential_file: Path) -> None:
    """The device side of a fleet: no key, a credential file, tokens from the broker."""
    config.api_key = None
    config.auth.token_broker.url = f"{broker_base}/token"
    config.auth.token_broker.credential_file = credential_file
    config.broker_credential = register_secret(
        Secret(credential_file.read_text().strip(), source=str(credential_file))
    )
    config.endpoints.rest_url = broker_base  # recordings through the broker's proxy


async def _run_mode(
    config: Config, mode: str, digits: str, exports_dir: Path | None = None
) -> ModeResult:
    events = EventBus()
    app = Appliance(config, events=events)
    result = ModeResult(mode, digits)
    runner = asyncio.create_task(app.run())
    try:
        await asyncio.wait_for(app.ready.wait(), 30)
        assert app.daemon is not None
        daemon = app.daemon
        feed = events.subscribe()
        printer = asyncio.create_task(_print_events(feed, result))
        speech_starts = daemon.ring.time_at(0) + LEAD_SECONDS  # the file's first sample
        lead = AGENT_PRESS_BEFORE_SPEECH if mode == "agent" else PRESS_BEFORE_SPEECH
        await _sleep_until(speech_starts - lead)
        daemon.press("short")
        speech_ends = speech_starts + _spoken_seconds(digits)
        if mode == "agent":
            # The emulated agent answers by repeating the digits of the question.
            await _wait_for(lambda: len(_replied_digits(result)) >= len(digits), AGENT_TIMEOUT)
            daemon.press("long")
        else:
            if mode == "live":
                await _retune_after_the_first_turn(daemon, result, digits)
            await _sleep_until(speech_ends + 1.5)
            daemon.press("short")
        await asyncio.wait_for(daemon.wait_idle(), 30)
        if mode == "record":
            await _wait_for(lambda: _completed(daemon), UPLOAD_TIMEOUT)
            result.got = words_to_digits(_recording_text(daemon))
        elif mode == "live":
            result.got = "".join(
                words_to_digits(line) for line in result.detail if line.startswith("final")
            )
            result.problems += _live_problems(result, digits)
        if mode in EXPORTED_MODES:
            await _expect_summary(config, result, digits)
            if exports_dir is not None:
                result.problems += await asyncio.to_thread(
                    _write_exports, config, daemon, exports_dir / mode
                )
        else:
            assert config.audio.output_file is not None  # the demo's config sets it
            heard = dtmf.decode_digits(*dtmf.read_wav(config.audio.output_file))
            print(f"    speaker played DTMF {heard!r} (greeting '0', then the reply)")
            result.got = _replied_digits(result)
        printer.cancel()
    finally:
        app.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(runner, 30)
    return result


async def _print_events(feed: AsyncIterable[Published[Event]], result: ModeResult) -> None:
    async for published in feed:
        event = published.event
        if isinstance(event, TurnPartial):
            print(f"    partial: {event.text}")
        elif isinstance(event, TurnFinal):
            line = (
                f"final [{event.speaker}]: {event.text}"
                if event.speaker
                else f"final: {event.text}"
            )
            result.detail.append(line)
            print(f"    {line}")
        elif isinstance(event, AgentUser) and event.final:
            print(f"    you:   {event.text}")
        elif isinstance(event, AgentReply):
            line = f"agent: {event.text}"
            result.detail.append(line)
            print(f"    {line}")
        elif isinstance(event, SpoolStatus) and event.states:
            print(f"    spool: {dict(event.states)}")
        elif isinstance(event, SummaryStored):
            result.summaries.append(event.text)
            print(f"    summary of the {event.source} ({event.model}):")
            for line in event.text.splitlines():
                print(f"      {line}")


async def _expect_summary(config: Config, result: ModeResult, digits: str) -> None:
    """With summaries on and the key on the device, one summary, naming the digits said."""
    if not config.summary.enabled:
        return
    if config.api_key is None:
        print("    summary: none (summaries need the API key on the device, not a broker)")
        return
    try:
        await _wait_for(lambda: bool(result.summaries), SUMMARY_TIMEOUT)
    except TimeoutError:
        result.problems.append("no summary was made")
        return
    # The emulator's gateway answers with the digits it read, as bullets, then action items.
    said = "".join(ch for ch in result.summaries[0].split("Action items")[0] if ch.isdigit())
    if said != digits:
        result.problems.append(f"the summary names {said!r}, not {digits!r}")


def _write_exports(config: Config, daemon: Daemon, folder: Path) -> list[str]:
    """Every session and recording the run kept, in every export format, into ``folder``
    (what ``appliance sessions export`` writes, summary included); the problems, if any."""
    from appliance.history.archive import Archive, NotFound
    from appliance.transcripts.exports import FORMATS

    archive = Archive.from_config(config, daemon.components.spool)
    entries = archive.entries()
    if not entries:
        return ["nothing to export"]
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    problems = []
    for entry in entries:
        for fmt in FORMATS:
            try:
                name, text = archive.export(entry.id, fmt)
            except NotFound as exc:
                problems.append(f"no {fmt} export of {entry.id}: {exc}")
                continue
            _write_private(folder / name, text)
        print(f"    exports: {folder / entry.kind}-{entry.id}.{{{','.join(FORMATS)}}}")
    return problems


def _write_private(path: Path, text: str) -> None:
    """Transcripts are private: mode 0600, as ``appliance sessions export -o`` writes them."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _key_term(digits: str) -> str:
    """The demo's mid-session key term: the last digit's word, in capitals."""
    word = next(w for w, d in WORDS.items() if d == digits[-1])
    return word.upper()


async def _retune_after_the_first_turn(daemon: Daemon, result: ModeResult, digits: str) -> None:
    """Once the first turn is final, set a key term from the page's control, mid-session."""
    if len(digits) < 2:
        return  # one turn: no later turn to show it in
    await _wait_for(lambda: any(d.startswith("final") for d in result.detail), 15)
    answer = await daemon.web_control("retune", {"keyterms": json.dumps([_key_term(digits)])})
    print(f"    retune: key terms {answer.get('keyterms_prompt')} (UpdateConfiguration)")
    if not answer.get("ok"):
        result.problems.append(f"retune refused: {answer.get('error')}")


def _live_problems(result: ModeResult, digits: str) -> list[str]:
    """Two speakers, and the key term spelled in a turn after the retune."""
    finals = [line for line in result.detail if line.startswith("final")]
    speakers = {line[len("final [") : line.index("]")] for line in finals if "[" in line}
    problems = []
    if len(digits) >= 2 and len(speakers) < 2:
        problems.append(f"expected two speakers, saw {sorted(speakers)}")
    if len(digits) >= 2 and not any(_key_term(digits) in line for line in finals[1:]):
        problems.append(f"no turn after the retune spells {_key_term(digits)!r}")
    return problems


def _replied_digits(result: ModeResult) -> str:
    return "".join(words_to_digits(line) for line in result.detail if line.startswith("agent:"))


def _spoken_seconds(digits: str) -> float:
    return len(dtmf.generate(" ".join(digits), 8000, lead_ms=0, trail_ms=0)) / 8000


def _completed(daemon: Daemon) -> bool:
    spool = daemon.components.spool
    rows = spool.list() if spool is not None else []
    return bool(rows) and all(r.state in ("completed", "failed") for r in rows)


def _recording_text(daemon: Daemon) -> str:
    import json

    texts: list[str] = []
    spool = daemon.components.spool
    if spool is None:
        return ""
    for row in spool.list():
        path = spool.artifact_path(row.id, "json")
        if path.exists():
            text = json.loads(path.read_text()).get("text") or ""
            print(f"    transcript of {row.id}: {text}")
            texts.append(text)
    return " ".join(texts)


async def _sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def _wait_for(predicate: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo waited too long")
        await asyncio.sleep(0.1)
