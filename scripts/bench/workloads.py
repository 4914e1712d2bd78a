"""The programs the benchmark measures, each run as its own process.

    python -m scripts.bench.workloads floor|sdk|live [options]

Shared protocol with the harness (scripts/bench/runner.py):

* READY=1 goes to ``$NOTIFY_SOCKET`` once the microphone delivers audio;
* each line on stdin is a button press (a session starts, the next press
  stops it); end of stdin or SIGTERM ends the program cleanly;
* ``--trace FILE`` receives one JSON object at exit: what the harness needs
  to turn the emulator's receive times into latencies (per-chunk read times
  for the SDK pipeline; the ring's clock mapping for ours).

``floor`` is the cheapest possible always-on capture: a PyAudio callback that
does nothing; ``playback-floor`` the same for a speaker fed silence.  ``sdk``
is the pipeline a developer would write with the official ``assemblyai`` SDK:
PyAudio blocking reads of 100 ms, ``audioop`` resampling to 16 kHz,
``StreamingClient.stream``, and a plain reconnect on error.  ``live`` is ours
through the public API: :class:`AudioCapture` into the ring and
:class:`appliance.LiveTranscriber` (no spool, no files).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from scripts.bench.notify import notify

MIC_RATE = 48_000
STT_RATE = 16_000


class Buttons:
    """Presses from stdin lines, delivered to ``on_press``; ``done`` is set at end of input."""

    def __init__(self, on_press) -> None:
        self.on_press = on_press
        self.done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: self.done.set())
        threading.Thread(target=self._run, name="stdin-button", daemon=True).start()

    def _run(self) -> None:
        for _line in sys.stdin:
            self.on_press(time.monotonic())
        self.done.set()


def write_trace(path: str | None, data: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(data))


def open_callback_capture(args: argparse.Namespace, callback):
    """PyAudio callback capture at ``--rate`` in ``--block-ms`` blocks: (PyAudio, stream)."""
    import pyaudio

    pa = pyaudio.PyAudio()
    stream = pa.open(
        rate=args.rate,
        channels=1,
        format=pyaudio.paInt16,
        input=True,
        frames_per_buffer=args.rate * args.block_ms // 1000,
        stream_callback=callback,
    )
    return pa, stream


def close_capture(pa, stream) -> None:
    stream.stop_stream()
    stream.close()
    pa.terminate()


# --------------------------------------------------------------------------- floor


def run_floor(args: argparse.Namespace) -> None:
    import pyaudio

    blocks = 0
    overflows = 0

    def callback(in_data, frame_count, time_info, status):
        nonlocal blocks, overflows
        blocks += 1
        if status & pyaudio.paInputOverflow:
            overflows += 1
        return (None, pyaudio.paContinue)

    buttons = Buttons(lambda t: None)
    pa, stream = open_callback_capture(args, callback)
    while blocks == 0 and not buttons.done.is_set():
        time.sleep(0.01)
    notify("READY=1")
    buttons.done.wait()
    close_capture(pa, stream)
    write_trace(args.trace, {"blocks": blocks, "overflows": overflows})


def run_playback_floor(args: argparse.Namespace) -> None:
    """The cheapest warm speaker: a PyAudio output callback handing back the same silence.

    ``--rate`` and ``--block-ms`` as the agent's speaker opens them (24 kHz, 10 ms), so
    the agent's CPU above both floors is the work it does with the audio itself.
    """
    import pyaudio

    blocks = 0
    underflows = 0
    silence = b""

    def callback(in_data, frame_count, time_info, status):
        nonlocal blocks, underflows, silence
        blocks += 1
        if status & pyaudio.paOutputUnderflow:
            underflows += 1
        if len(silence) != 2 * frame_count:
            silence = bytes(2 * frame_count)
        return (silence, pyaudio.paContinue)

    buttons = Buttons(lambda t: None)
    pa = pyaudio.PyAudio()
    stream = pa.open(
        rate=args.rate,
        channels=1,
        format=pyaudio.paInt16,
        output=True,
        frames_per_buffer=args.rate * args.block_ms // 1000,
        stream_callback=callback,
    )
    while blocks == 0 and not buttons.done.is_set():
        time.sleep(0.01)
    notify("READY=1")
    buttons.done.wait()
    close_capture(pa, stream)
    write_trace(args.trace, {"blocks": blocks, "underruns": underflows})


# --------------------------------------------------------------------------- transport


class FrameCollector:
    """The yardsticks' capture callback: while streaming, joins capture blocks into
    frames of ``chunk_frames`` and hands each to ``deliver`` on the capture thread."""

    def __init__(self, chunk_frames: int, deliver: Callable[[bytes], None]) -> None:
        import pyaudio

        self.chunk_frames = chunk_frames
        self.deliver = deliver
        self.streaming = False
        self.overflows = 0
        self._pending: list[bytes] = []
        self._held = 0
        self._overflow_flag = pyaudio.paInputOverflow
        self._continue = pyaudio.paContinue

    def callback(self, in_data, frame_count, time_info, status):
        if status & self._overflow_flag:
            self.overflows += 1
        if self.streaming:
            self._pending.append(in_data)
            self._held += frame_count
            if self._held >= self.chunk_frames:
                data = b"".join(self._pending)
                self._pending.clear()
                self._held = 0
                self.deliver(data)
        return (None, self._continue)


def run_transport(args: argparse.Namespace) -> None:
    """The least an asyncio client can do for this stream: a yardstick, not a product.

    PyAudio callback capture (``--block-ms``); every ``--chunk-ms`` the capture
    thread wakes the event loop, which sends that audio, decimated to 16 kHz by
    taking every third sample (no filter, no ring, no resume, no spool), as one
    binary frame over ``websockets`` to the emulator, authenticated with the API
    key, and reads whatever the service sends back. Its CPU above the floor is
    what Python, asyncio and websockets alone cost for this message rate.
    """
    import websockets.asyncio.client as ws_client

    step = args.rate // STT_RATE
    chunk_frames = args.rate * args.chunk_ms // 1000
    collector: FrameCollector | None = None

    async def main() -> None:
        nonlocal collector
        loop = asyncio.get_running_loop()
        frames: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: end of input
        collector = FrameCollector(
            chunk_frames, lambda data: loop.call_soon_threadsafe(frames.put_nowait, data)
        )
        pa, stream = open_callback_capture(args, collector.callback)
        await asyncio.sleep(0.2)
        notify("READY=1")
        presses: asyncio.Queue[float] = asyncio.Queue()
        buttons = Buttons(lambda t: loop.call_soon_threadsafe(presses.put_nowait, t))

        def end_of_input() -> None:
            buttons.done.wait()
            loop.call_soon_threadsafe(frames.put_nowait, None)

        threading.Thread(target=end_of_input, daemon=True).start()
        await presses.get()
        url = f"{args.ws_host}/v3/ws?sample_rate={STT_RATE}&encoding=pcm_s16le"
        async with ws_client.connect(
            url, additional_headers={"Authorization": args.api_key}, compression=None
        ) as ws:

            async def drain() -> None:
                async for _message in ws:
                    pass

            reader = asyncio.create_task(drain())
            collector.streaming = True
            # One await per frame, no task: the least an asyncio sender can do.
            while (data := await frames.get()) is not None:
                await ws.send(memoryview(data).cast("h")[::step].tobytes())
            collector.streaming = False
            await ws.send(json.dumps({"type": "Terminate"}))
            reader.cancel()
        close_capture(pa, stream)

    asyncio.run(main())
    write_trace(args.trace, {"overflows": collector.overflows if collector else 0})


def run_transport_thread(args: argparse.Namespace) -> None:
    """The transport yardstick with a sender thread instead of the event loop.

    As :func:`run_transport`, but every ``--chunk-ms`` the capture thread wakes a
    sender thread (a ``threading.Condition``), which sends the frame over
    websockets' sync client; that client's own thread reads what the service
    sends back. What this costs against :func:`run_transport` is what moving the
    audio path off the event loop could save.
    """
    from websockets.sync.client import connect as sync_connect

    step = args.rate // STT_RATE
    ready = threading.Condition()
    frames: list[bytes | None] = []  # None: end of input

    def hand_over(data: bytes | None) -> None:
        with ready:
            frames.append(data)
            ready.notify()

    collector = FrameCollector(args.rate * args.chunk_ms // 1000, hand_over)
    pa, stream = open_callback_capture(args, collector.callback)
    time.sleep(0.2)
    notify("READY=1")
    pressed = threading.Event()
    buttons = Buttons(lambda t: pressed.set())

    def end_of_input() -> None:
        buttons.done.wait()
        pressed.set()
        hand_over(None)

    threading.Thread(target=end_of_input, daemon=True).start()
    pressed.wait()
    url = f"{args.ws_host}/v3/ws?sample_rate={STT_RATE}&encoding=pcm_s16le"
    with sync_connect(
        url, additional_headers={"Authorization": args.api_key}, compression=None
    ) as ws:

        def drain() -> None:
            with contextlib.suppress(Exception):
                for _message in ws:
                    pass

        threading.Thread(target=drain, daemon=True).start()
        collector.streaming = True
        while True:
            with ready:
                while not frames:
                    ready.wait()
                data = frames.pop(0)
            if data is None:
                break
            ws.send(memoryview(data).cast("h")[::step].tobytes())
        collector.streaming = False
        ws.send(json.dumps({"type": "Terminate"}))
    close_capture(pa, stream)
    write_trace(args.trace, {"overflows": collector.overflows})


# --------------------------------------------------------------------------- SDK


def run_sdk(args: argparse.Namespace) -> None:
    """The obvious SDK program: read 100 ms, resample, stream; reconnect when it breaks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    import pyaudio
    from assemblyai.streaming.v3 import (
        StreamingClient,
        StreamingClientOptions,
        StreamingEvents,
        StreamingParameters,
    )

    chunk_frames = args.rate * 100 // 1000
    presses: list[float] = []
    lock = threading.Lock()
    buttons = Buttons(lambda t: (lock.acquire(), presses.append(t), lock.release()))
    pa = pyaudio.PyAudio()
    stream = pa.open(
        rate=args.rate,
        channels=1,
        format=pyaudio.paInt16,
        input=True,
        frames_per_buffer=chunk_frames,
    )
    params = StreamingParameters(sample_rate=STT_RATE, speech_model="u3-rt-pro", format_turns=True)
    options = StreamingClientOptions(api_key=args.api_key, api_host=args.ws_host)
    state = {"broken": False, "turns": 0, "errors": 0}

    def on_turn(client, event) -> None:
        if event.end_of_turn:
            state["turns"] += 1

    def on_error(client, error) -> None:
        state["errors"] += 1
        state["broken"] = True

    def connect() -> StreamingClient:
        client = StreamingClient(options)
        client.on(StreamingEvents.Turn, on_turn)
        client.on(StreamingEvents.Error, on_error)
        state["broken"] = False
        client.connect(params)
        return client

    client: StreamingClient | None = None
    ratecv_state = None
    sessions: list[dict] = []  # per connection: chunk read times, in send order
    overflows = 0
    ready = False
    handled = 0
    while not buttons.done.is_set():
        try:
            data = stream.read(chunk_frames, exception_on_overflow=True)
        except OSError:
            overflows += 1
            continue
        t_read = time.monotonic()
        if not ready:
            notify("READY=1")
            ready = True
        with lock:
            pending = presses[handled:]
            handled = len(presses)
        for _ in pending:
            if client is None:
                client = connect()
                sessions.append({"reads": []})
            else:
                client.disconnect(terminate=True)
                client = None
        if client is None:
            continue
        if state["broken"]:
            client.disconnect()
            client = connect()
            sessions.append({"reads": []})
        converted, ratecv_state = audioop.ratecv(data, 2, 1, args.rate, STT_RATE, ratecv_state)
        client.stream(converted)
        sessions[-1]["reads"].append(t_read)
    if client is not None:
        client.disconnect(terminate=True)
    stream.stop_stream()
    stream.close()
    pa.terminate()
    write_trace(
        args.trace,
        {"sessions": sessions, "overflows": overflows, "turns": state["turns"], **state},
    )


# --------------------------------------------------------------------------- ours


def apply_patches(spec: str) -> None:
    """Try a proposed change to ours without editing its module (``--patch a,b=c``).

    ``quality=Q``: the soxr quality of the resampler.
    """
    import appliance.audio.resample as resample

    for item in filter(None, spec.split(",")):
        name, _, value = item.partition("=")
        if name == "quality":
            resample.DEFAULT_QUALITY = value
            resample.Resampler.__init__.__defaults__ = (value,)
        else:
            raise SystemExit(f"unknown patch {name!r}")


def trace_blocks(ring, callbacks: list[tuple[int, float]]) -> None:
    """Note (write index, time) as each block lands in ``ring``, through its public waiters.

    Each note registers the next one on the writer's thread: one list append
    and one registration per block, the cost the trace always had.
    """

    def landed() -> None:
        index = ring.write_index
        callbacks.append((index, time.monotonic()))
        ring.call_when_written(index + 1, landed)

    ring.call_when_written(ring.write_index + 1, landed)


def run_live(args: argparse.Namespace) -> None:
    """Ours through the public API: capture -> ring -> LiveTranscriber, one session per press."""
    import logging

    from appliance import (
        AudioCapture,
        EndpointsConfig,
        LiveOptions,
        LiveTranscriber,
        MintedTokens,
        Secret,
    )
    from appliance.config import AudioConfig
    from appliance.connection.tokens import TokenCoordinator

    logging.basicConfig(level=logging.WARNING)
    apply_patches(args.patch)
    urls = EndpointsConfig(base_url=args.http_url).resolved()
    options = LiveOptions(url=urls.streaming_url)
    preroll_seconds = AudioConfig().preroll_seconds
    capture = AudioCapture(rate=args.rate, block_ms=args.block_ms)
    capture.start()
    callbacks: list[tuple[int, float]] = []  # (ring write index after, block time)
    if args.trace:
        # When each block reached the ring: the start of capture -> send latency.
        trace_blocks(capture.ring, callbacks)
    while capture.blocks == 0:
        time.sleep(0.005)
    notify("READY=1")
    ring = capture.ring
    trace: dict = {
        "rate": ring.rate,
        "block": max(1, capture.rate * capture.block_ms // 1000),
        "sessions": [],
    }

    async def main() -> None:
        loop = asyncio.get_running_loop()
        presses: asyncio.Queue[float] = asyncio.Queue()
        done = asyncio.Event()
        buttons = Buttons(lambda t: loop.call_soon_threadsafe(presses.put_nowait, t))
        threading.Thread(
            target=lambda: (buttons.done.wait(), loop.call_soon_threadsafe(done.set)),
            daemon=True,
        ).start()
        minted = MintedTokens.streaming(urls.streaming_token_url, Secret(args.api_key, "bench"))
        tokens = TokenCoordinator(minted) if args.prefetch else minted
        if args.prefetch:
            tokens.start()

        async def next_press() -> float | None:
            """The next press's time, or None at the end of input."""
            getter = asyncio.ensure_future(presses.get())
            waiter = asyncio.ensure_future(done.wait())
            await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not getter.done():
                getter.cancel()
                return None
            return getter.result()

        while (t_press := await next_press()) is not None:
            start = ring.preroll_index(t_press, preroll_seconds)
            session = {"start_index": start, "t0": ring.time_at(0), "press": t_press}
            trace["sessions"].append(session)
            async with LiveTranscriber(options, tokens, ring, start_index=start):
                if await next_press() is None:
                    break
        await tokens.aclose()  # the coordinator closes the minter it wraps

    asyncio.run(main())
    capture.stop()
    trace["overflows"] = capture.overflows
    trace["t0_end"] = ring.time_at(0)
    trace["callbacks"] = callbacks
    write_trace(args.trace, trace)


def install_daemon_tracing(trace: dict) -> None:
    """Class-level wrappers that log when audio moves, so appliance code stays untouched.

    Capture callbacks (ring write index after, time), the start index of each
    live session, playback writes, the moment playback starts playing, and
    flushes.  Each costs a list append on paths that already run per block.
    """
    from appliance.audio import capture as capture_mod
    from appliance.audio import playback as playback_mod
    from appliance.live import LiveTranscription

    captures: list = []
    trace.update(callbacks=[], sessions=[], playing=[], flushes=[], writes=0)

    cap_cb = capture_mod.AudioCapture._callback

    def capture_callback(self, in_data, frame_count, time_info, status):
        result = cap_cb(self, in_data, frame_count, time_info, status)
        trace["callbacks"].append((self.ring.write_index, self.last_callback_time))
        if not captures:
            captures.append(self)
            trace["rate"] = self.rate
        return result

    capture_mod.AudioCapture._callback = capture_callback

    live_run = LiveTranscription.run

    async def run(self, start_index: int):
        trace["sessions"].append({"start_index": start_index, "t": time.monotonic()})
        return await live_run(self, start_index)

    LiveTranscription.run = run

    Playback = playback_mod.AudioPlayback
    play_cb = Playback._callback
    playing = playback_mod.PlaybackState.PLAYING

    def playback_callback(self, in_data, frame_count, time_info, status):
        before = self.playback_state
        result = play_cb(self, in_data, frame_count, time_info, status)
        if before is not playing and self.playback_state is playing:
            trace["playing"].append(time.monotonic())
        return result

    Playback._callback = playback_callback
    flush = Playback.flush

    def traced_flush(self):
        flush(self)
        trace["flushes"].append(time.monotonic())

    Playback.flush = traced_flush

    def finish() -> None:
        if captures:
            trace["overflows"] = captures[0].overflows
        trace["underruns"] = sum(getattr(p, "underruns", 0) for p in _playbacks)

    _playbacks: list = []
    init = Playback.__init__

    def traced_init(self, *a, **k):
        init(self, *a, **k)
        _playbacks.append(self)

    Playback.__init__ = traced_init
    trace["_finish"] = finish


def run_daemon(args: argparse.Namespace) -> None:
    """``appliance run`` with a generated configuration, keyboard button on stdin."""
    import atexit
    import tempfile

    import yaml

    from appliance.cli import main as appliance_main

    work = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    if os.environ.get("APPLIANCE_BENCH_STATE_FROM"):  # debug: start from an aged state directory
        import shutil

        shutil.copytree(os.environ["APPLIANCE_BENCH_STATE_FROM"], work / "state")
    key_file = work / "api-key"
    key_file.write_text(args.api_key)
    key_file.chmod(0o600)
    audio: dict = {"sink": args.sink or ("pyaudio" if args.mode == "agent" else "none")}
    if args.output_block_ms:
        audio["output_block_ms"] = args.output_block_ms
    if args.capture_block_ms:
        audio["block_ms"] = args.capture_block_ms
    if args.input_file:
        audio.update(source="file", input_file=args.input_file)
    else:
        audio.update(source="pyaudio", input_rate=args.rate)
    config = {
        "mode": args.mode,
        "state_dir": str(work / "state"),
        "endpoints": {"base_url": args.http_url},
        "auth": {"api_key_file": str(key_file)},
        "audio": audio,
        "button": {"enabled": False, "keyboard": True},
        "earcons": {"enabled": False},
        "agent": {"echo": "full_duplex"},
    }
    if args.web_port:
        config["web"] = {"enabled": True, "port": args.web_port}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    trace: dict = {}
    if args.trace and not args.no_trace:
        install_daemon_tracing(trace)

        def dump() -> None:
            trace.pop("_finish")()
            write_trace(args.trace, trace)

        atexit.register(dump)
    if args.stats_file:
        install_stats_dump(args.stats_file)
    if os.environ.get("APPLIANCE_BENCH_PROFILE"):  # debug: the event loop's thread under cProfile
        import cProfile

        profile = cProfile.Profile(time.thread_time)
        atexit.register(lambda: profile.dump_stats(os.environ["APPLIANCE_BENCH_PROFILE"]))
        profile.enable()
    sys.exit(appliance_main(["run", "--config", str(path)]))


#: Debug only (``APPLIANCE_TRACEMALLOC=N``): log, per stats dump, the RSS, glibc's heap
#: and, with N > 0 (tracemalloc with N frames), the Python heap and, at the first dump and
#: every ``APPLIANCE_TRACEMALLOC_EVERY`` dumps (a snapshot costs megabytes), the
#: allocation sites that grew most since the first dump.
HEAP_TOP_EVERY = 100
HEAP_TOP_LINES = 25
MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


def _mallinfo2() -> dict[str, int] | None:
    """glibc's heap statistics (``mallinfo2``, all arenas): bytes in use, free, mmapped."""
    import ctypes
    import ctypes.util

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS.split()]

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return {name: int(getattr(info, name)) for name, _ in MallInfo2._fields_}


def heap_logger(path: str) -> Callable[[int], None] | None:
    """The ``APPLIANCE_TRACEMALLOC`` logger for the stats dump, or None (the normal path).

    Writes one JSON line per dump to ``<path>.heap.jsonl``. tracemalloc starts
    here, before the daemon runs, so the first dump is the baseline. Also:
    ``APPLIANCE_GC_COLLECT=1`` runs ``gc.collect()`` first and logs what it
    found unreachable, by type (what reference cycles kept since the last
    dump); ``APPLIANCE_MALLOC_TRIM=1`` calls ``malloc_trim(0)`` and logs the
    RSS after it.
    """
    setting = os.environ.get("APPLIANCE_TRACEMALLOC")
    if setting is None:
        return None
    import collections
    import ctypes
    import gc
    import tracemalloc

    frames = int(setting or 0)
    if frames > 0:
        tracemalloc.start(frames)
    every = int(os.environ.get("APPLIANCE_TRACEMALLOC_EVERY", HEAP_TOP_EVERY))
    collect = os.environ.get("APPLIANCE_GC_COLLECT") == "1"
    trim = os.environ.get("APPLIANCE_MALLOC_TRIM") == "1"
    libc = ctypes.CDLL("libc.so.6")
    out = Path(f"{path}.heap.jsonl")
    state: dict[str, tracemalloc.Snapshot] = {}

    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log(seq: int) -> None:
        row: dict[str, object] = {"seq": seq, "rss_kib": rss_kib()}
        if collect:
            gc.set_debug(gc.DEBUG_SAVEALL)
            row["gc_unreachable"] = gc.collect()
            kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
            row["gc_types"] = kinds.most_common(12)
            gc.garbage.clear()
            gc.set_debug(0)
            gc.collect()  # the saved cycles are unreachable again: free them
            row["rss_kib_collected"] = rss_kib()
        if frames > 0:
            row["py_traced"], row["py_peak"] = tracemalloc.get_traced_memory()
        row["malloc"] = _mallinfo2()
        if trim:
            libc.malloc_trim(0)
            row["rss_kib_trimmed"] = rss_kib()
            row["malloc_trimmed"] = _mallinfo2()
        if frames > 0 and (seq == 1 or (every > 0 and seq % every == 0)):
            snap = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            if "base" not in state:
                state["base"] = snap
            else:
                top = snap.compare_to(state["base"], "traceback")[:HEAP_TOP_LINES]
                row["top"] = [
                    {
                        "size_diff": d.size_diff,
                        "count_diff": d.count_diff,
                        "size": d.size,
                        "where": d.traceback.format(),
                    }
                    for d in top
                ]
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")

    return log


def install_stats_dump(path: str) -> None:
    """On SIGUSR1, write what only the process can tell: its asyncio tasks and threads.

    The handler runs on the main thread, which runs the daemon's event loop, so
    the running loop is the daemon's. ``seq`` counts the dumps (the reader
    waits for the one it asked for).
    """
    import asyncio
    import dataclasses

    from appliance.secrets import registry_stats

    seq = 0
    heap = heap_logger(path)

    def dump(*_: object) -> None:
        nonlocal seq
        seq += 1
        if heap is not None:
            heap(seq)
        loop = asyncio._get_running_loop()
        data = {
            "seq": seq,
            "tasks": len(asyncio.all_tasks(loop)) if loop is not None else None,
            "threads": threading.active_count(),
            "secrets": dataclasses.asdict(registry_stats()),
            # All threads' CPU, to the nanosecond: /proc's utime+stime counts 10 ms
            # ticks, a fifth of what a short session costs.
            "cpu_s": time.process_time(),
        }
        tmp = f"{path}.tmp"
        Path(tmp).write_text(json.dumps(data))
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR1, dump)


def main() -> None:
    # selenium (dev extra, for the browser tests) installs trio, and httpcore imports
    # trio whenever it is installed (~3.5 MB): a device, and a developer's SDK program,
    # have no trio. Measure what they would load.
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]
    # Likewise httpx imports its command-line client (click, rich, pygments: 43 ms here)
    # whenever click and rich are installed, which only the dev extra (import-linter) and
    # the broker's uvicorn do; a device (`appliance[mqtt]`) has neither.
    for name in ("click", "rich"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "workload",
        choices=(
            "floor",
            "playback-floor",
            "transport",
            "transport-thread",
            "sdk",
            "live",
            "daemon",
        ),
    )
    parser.add_argument("--mode", default="live", help="daemon: live, agent or record")
    parser.add_argument("--input-file", help="daemon: the paced file source instead of the mic")
    parser.add_argument("--rate", type=int, default=MIC_RATE)
    parser.add_argument("--block-ms", type=int, default=20)
    parser.add_argument("--chunk-ms", type=int, default=100, help="transport: audio per frame")
    parser.add_argument("--output-block-ms", type=int, help="daemon: speaker callback period")
    parser.add_argument("--capture-block-ms", type=int, help="daemon: audio.block_ms")
    parser.add_argument("--sink", help="daemon: audio.sink (default: pyaudio for the agent)")
    parser.add_argument("--web-port", type=int, help="daemon: serve the local page on this port")
    parser.add_argument("--stats-file", help="daemon: write tasks and threads here on SIGUSR1")
    parser.add_argument("--http-url", default="http://127.0.0.1:8765")
    parser.add_argument("--api-key", default=os.environ.get("BENCH_API_KEY", ""))
    parser.add_argument("--prefetch", action="store_true", help="keep a token ready (ours)")
    parser.add_argument("--trace")
    parser.add_argument(
        "--no-trace",
        action="store_true",
        help="daemon: no audio trace (it grows by a tuple per capture block: not for soaks)",
    )
    parser.add_argument("--patch", default="", help="live: proposed changes to try")
    args = parser.parse_args()
    args.ws_host = "ws" + args.http_url[4:]
    workloads = {
        "floor": run_floor,
        "playback-floor": run_playback_floor,
        "transport": run_transport,
        "transport-thread": run_transport_thread,
        "sdk": run_sdk,
        "live": run_live,
        "daemon": run_daemon,
    }
    workloads[args.workload](args)


if __name__ == "__main__":
    main()
