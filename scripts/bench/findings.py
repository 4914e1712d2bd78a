"""What was tried for each performance target a full run may miss, and where its limit lies.

The report prints an entry under "Targets missed" when its target's verdict is NO (the
start-up section prints its own). The figures are from paired runs (3 x 30 s or more
each, medians) on the build machine, 2 cores shared with other work; the machine moved
from an Intel Xeon host to an AMD EPYC one between rounds, where every thread wake-up
costs more (a bare 20 ms speaker: 0.40 CPU-s/min there, 0.90 here). docs/performance.md
has the detail, and each change's A/B figures are in its commit message.
"""

from __future__ import annotations

FINDINGS: dict[str, list[str]] = {
    "live": [
        "- Tried, and kept: 200 ms frames instead of 100 (`live.chunk_ms`; Xeon host: 0.77 -> "
        "0.55 CPU-s/min against the SDK's 0.63), then 200 ms capture blocks in live and "
        "recording, one block per frame (`audio.block_ms` by mode; EPYC host: 0.68 -> 0.58, "
        "the capture floor 0.24 -> 0.18). A frame's last sample leaves no later than before; "
        "READY=1 comes about 0.09 s later (it waits for the first block).",
        "- Tried, not kept: 400 ms frames (0.76x the SDK on the Xeon host, at twice the wait "
        "before a word leaves).",
        "- Profiled (cProfile on the loop's thread, per-thread CPU from /proc): the cost is per "
        "wake-up of the event loop, about nine a second (five frames, four messages), with no "
        "hot function. An asyncio wake-up from another thread costs about 160 us of CPU here, "
        "230 us with the task it resumes; a `threading.Condition` wake-up 40 us.",
        "- Measured before building it: the sender thread the issue proposes, as a second "
        "yardstick (capture -> sender thread -> websockets' sync client, 200 ms frames; rows "
        "above). Paired against the asyncio yardstick: 0.39 against 0.46 CPU-s/min, so the "
        "daemon would save about 0.07.",
        "- The limit: the thread yardstick alone, which sends bytes and nothing else, is about "
        "0.65x the SDK pipeline, so 0.7x leaves about 0.03 CPU-s/min for the resampler (the "
        "yardstick drops samples), the ring, the session core and its account, turns, the "
        "spool keeper, the watchdog and the page. The sender thread was not built: it cannot "
        "reach the target, and it would have two threads drive the session core under a "
        "lock where one loop now does by construction.",
    ],
    "agent": [
        "- Tried, and kept: one 100 ms `input.audio` per capture block, built around its "
        "base64 without a JSON encoder pass, and 20 ms speaker blocks instead of 10 (together "
        "2.15 -> 1.69 CPU-s/min on the Xeon host).",
        "- Measured and not worth changing: soxr HQ 48 -> 24 kHz (0.014 CPU-s/min) and "
        "decoding replies (about 0.02).",
        "- Measured, offered, not the default: 200 ms capture blocks and 40 ms speaker blocks "
        "(the CPU-first row above; paired on the EPYC host: 2.08 -> 1.86 with the capture "
        "block alone, 1.34 with both). The price: the server hears each 100 ms of speech, a "
        "barge-in too, up to 100 ms later, and a flush is heard up to 40 ms late. A "
        "push-button conversation keeps the latency.",
        "- The limit: the two floors (capture and a warm speaker; rows above) take most of 1.0 "
        "before the agent does anything, 0.24 + 0.90 on this host at 100 ms and 20 ms. Even "
        "the CPU-first settings' floors (0.18 + 0.50) leave 0.32 for the agent's own work, "
        "which costs about 0.6: ten input frames a second and the replies, each a wake-up of "
        "the loop as for live.",
    ],
    "record": [
        "- Tried, and kept: the recorder copies the ring into the spool on a thread of its "
        "own, woken when a chunk is complete (0.65 -> 0.32 CPU-s/min on the Xeon host), and "
        "200 ms capture blocks (the capture floor 0.24 -> 0.18 on the EPYC host).",
        "- The limit: the capture floor is most of it; the recorder's own work is the "
        "difference to the floor row.",
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
    "reconnect": [
        "- The experiment drops the connection `healthy_after_seconds` + 1 s after the last "
        "drop (`DROP_SPACING_SECONDS`). A drop sooner than that is the reconnect policy's "
        "second in a row and takes the full-jitter backoff by design: a server that drops "
        "every connection gets one quick reconnect, not a cascade.",
        "- The full run of 2026-12-02 still dropped every 2 s, inside that window, and "
        "measured the backoff (median 1389 ms, max 1679); the spacing came right after it.",
    ],
    "startup": [
        "- Tried, and kept: token requests without httpx, httpx and each mode's modules "
        "imported only when used, and the other parts opened while the microphone's first "
        "block is on its way (0.51 -> 0.334-0.342 s on the Xeon host, where the target was "
        "met).",
        "- This host is slower to start any Python: `python -c pass` takes 0.040 s here "
        "against 0.022 there, and the same imports take about 1.4x as long.",
        "- Live and recording now capture 200 ms blocks (CPU above), and READY=1 waits for "
        "the first one: about 0.09 s more than the agent's 100 ms blocks. Sending READY=1 "
        "before the microphone has delivered would meet the target by saying something not "
        "yet true; it is not done.",
    ],
}
