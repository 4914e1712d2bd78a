"""What was tried for each performance target a full run may miss, and where its limit lies.

The report prints an entry under "Targets missed" when its target's verdict is NO. The
figures are from paired runs on the build machine (2 cores, shared with other work);
docs/performance.md has the detail, and each change's A/B figures are in its commit.
"""

from __future__ import annotations

FINDINGS: dict[str, list[str]] = {
    "live": [
        "- Tried: 200 ms frames instead of 100 (`live.chunk_ms`): live from 0.77 to 0.55 "
        "CPU-s/min against the SDK's 0.63 in one series, 0.645 against 0.69 in another. "
        "400 ms frames reached 0.76x, at twice the wait before a word leaves: not taken.",
        "- Profiled (cProfile on the loop's thread, per-thread CPU from /proc): the session's "
        "cost is per wake-up of the event loop, about nine a second (five frames, four "
        "messages), not one function. An asyncio wake-up from another thread costs about "
        "160 us of CPU here, 230 us with the task it resumes; a `threading.Condition` "
        "wake-up costs 40 us.",
        "- Measured the architecture the issue proposes before building it: the yardstick "
        "rows. Capture -> sender thread -> websockets' sync client against capture -> "
        "asyncio -> websockets, both sending 200 ms frames and nothing else: see their rows "
        "above (0.39 against 0.46 CPU-s/min in a paired series). A sender thread would save "
        "about 0.07 CPU-s/min in the daemon.",
        "- The limit: the thread yardstick alone is about 0.65x the SDK pipeline, so 0.7x "
        "leaves about 0.03 CPU-s/min for everything the daemon does beyond sending bytes: "
        "the resampler (the yardstick drops samples), the ring, the session core and its "
        "account, turns, the spool keeper, the watchdog and the page. The sender thread "
        "was not built this round: it would not reach the target, and it would have two "
        "threads drive the session core under a lock, where now one loop does by "
        "construction.",
    ],
    "agent": [
        "- Tried: one 100 ms `input.audio` per capture block, built around its base64 "
        "without a JSON encoder pass (2.15 -> 1.69 CPU-s/min with the next item); 20 ms "
        "speaker blocks instead of 10 (`audio.output_block_ms`; a barge-in flush is heard "
        "within 20 ms).",
        "- Measured and not worth changing: soxr HQ 48 -> 24 kHz (0.014 CPU-s/min) and "
        "decoding replies (about 0.02).",
        "- The limit: the two floors (capture and a warm speaker, rows above) take more than "
        "half of 1.0 before the agent does anything. Per thread over 30 s: event loop about "
        "0.58, speaker callback 0.42 and its PulseAudio thread 0.18, capture 0.2. What is "
        "left is per wake-up, as for live. The ways under 1.0 trade latency: 40 ms speaker "
        "blocks (the floor falls from 0.40 to 0.27; a flush heard up to 40 ms late) or 200 "
        "ms input chunks (turn detection up to 100 ms later).",
    ],
    "rss": [
        "- Tried: token requests on a small h11 client instead of httpx, httpx imported only "
        "at the first upload, summary or HTTP tool (59-61 -> 54.6-56.6 MiB); "
        "`MALLOC_ARENA_MAX=2` (+-0.15), `malloc_trim` after start (-0.5 once), freeing "
        "ALSA's cached configuration (0).",
        "- Where it goes (smaps): about 26 MiB of shared library pages (libpython 5.1, "
        "numpy's libraries 5.6, libcrypto 3.5, libc 1.7, libstdc++ 1.4, sqlite 1.3), 1.5 "
        "MiB of libdb and libjack that PortAudio touches at start with no JACK server, and "
        "about 31 MiB of Python objects and heap.",
        "- The limit: numpy and PortAudio's start-up, about 20 MiB together. 50 MB needs "
        "numpy out of the daemon (the ring, the recorder, playback, and the soxr binding "
        "takes numpy arrays) or a PortAudio built without JACK. Under the Pi-class budget "
        "the memory cgroup charges only the group's own pages: 34-36 MiB for live and the "
        "agent (section above).",
    ],
}
