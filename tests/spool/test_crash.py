"""kill -9 at random moments (and at every step boundary): nothing lost, nothing submitted twice.

A real process (``python -m appliance.spool.tool``) records DTMF audio into
the spool and drains the uploader against the emulator; the test kills it
with SIGKILL at a random moment, over and over, then lets a final clean run
finish. Every recording must end completed, its audio a sample-exact prefix
of what was written and at least as long as the last durable point the
process reported, and the emulator must have seen one submission per content.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance import dtmf
from appliance.spool import Spool, SpoolParams
from appliance.spool import store as st

RATE = 16000
KILL_RUNS = 22
ROOT = Path(__file__).resolve().parents[2]


def tool(emulator, spool_dir: Path, *args: str, crash_at: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, ASSEMBLYAI_API_KEY=emulator.api_key, PYTHONPATH=str(ROOT))
    env.pop("APPLIANCE_SPOOL_CRASH_AT", None)
    if crash_at:
        env["APPLIANCE_SPOOL_CRASH_AT"] = crash_at
    cmd = [sys.executable, "-m", "appliance.spool.tool", "--spool", str(spool_dir)]
    cmd += ["--url", emulator.http_url, *args]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )


def parse(output: str) -> dict[str, tuple[int, int]]:
    """recording id -> (last durable samples reported, samples closed with or -1)."""
    seen: dict[str, tuple[int, int]] = {}
    for line in output.splitlines():
        parts = line.split()
        if parts[:1] == ["opened"]:
            seen[parts[1]] = (0, -1)
        elif parts[:1] == ["durable"]:
            seen[parts[1]] = (int(parts[2]), seen[parts[1]][1])
        elif parts[:1] == ["closed"]:
            seen[parts[1]] = (seen[parts[1]][0], int(parts[2]))
    return seen


def audio_of(spool: Spool, rid: str) -> np.ndarray:
    parts = []
    for seg in spool.segments(rid):
        with wave.open(str(seg), "rb") as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16))
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


def final_run(emulator, spool_dir: Path) -> None:
    proc = tool(emulator, spool_dir, "--upload", "--timeout", "60")
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0 and "drained" in out


@pytest.mark.timeout(300)
def test_random_kill9_loop_completes_everything_exactly_once(tmp_path, emulator):
    rng = random.Random(7)
    spool_dir = tmp_path / "spool"
    expected: dict[str, tuple[str, int]] = {}  # id -> (digits, durable samples)
    kills = 0
    # How long one undisturbed run lives (start-up, record, upload): kill inside that span.
    t0 = time.monotonic()
    proc = tool(emulator, spool_dir, "--record", "0", "--upload")
    for rid, (durable, _closed) in parse(proc.communicate(timeout=60)[0]).items():
        expected[rid] = ("0", durable)
    lifetime = (time.monotonic() - t0) * 0.95
    for run in range(KILL_RUNS):
        digits = f"{run % 10} {rng.choice('0123456789ABCD')}"
        proc = tool(emulator, spool_dir, "--record", digits, "--upload")
        try:
            proc.wait(timeout=rng.uniform(0.2, lifetime))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        out, _ = proc.communicate(timeout=30)
        for rid, (durable, _closed) in parse(out).items():
            expected[rid] = (digits, durable)
    final_run(emulator, spool_dir)
    assert kills >= KILL_RUNS // 2  # most runs really were killed mid-way

    spool = Spool(SpoolParams(spool_dir, min_free_bytes=0), owner=False)
    rows = {r.id: r for r in spool.list()}
    for rid, (digits, durable) in expected.items():
        row = rows.get(rid)
        if row is None:  # killed before a single sample was durable: removed as empty
            assert durable == 0, rid
            continue
        # Even a kill inside a submit call ends completed: the uploader finds the transcript
        # the server accepted in GET /v2/transcript and adopts it instead of submitting again.
        assert row.state == st.COMPLETED, (rid, row.state, row.last_error)
        assert spool.artifact_path(rid, "json").exists()
        audio = audio_of(spool, rid)
        sent = dtmf.generate(digits, RATE)
        assert len(audio) >= durable, (rid, len(audio), durable)
        np.testing.assert_array_equal(audio, sent[: len(audio)])
        assert emulator.state.submissions_by_hash[row.content_hash.removeprefix("sha256:")] <= 1
    assert all(n == 1 for n in emulator.state.submissions_by_hash.values())


@pytest.mark.parametrize("point", ["upload-start", "upload-answered", "transcript-stored"])
def test_crash_at_each_step_resumes_without_duplicates(tmp_path, emulator, point):
    spool_dir = tmp_path / "spool"
    proc = tool(emulator, spool_dir, "--record", "1 2", "--upload", crash_at=point)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 137, out  # it really died at the crash point
    final_run(emulator, spool_dir)
    spool = Spool(SpoolParams(spool_dir, min_free_bytes=0), owner=False)
    (row,) = spool.list()
    assert row.state == st.COMPLETED, row.last_error
    assert list(emulator.state.submissions_by_hash.values()) == [1]
    audio = audio_of(spool, row.id)
    np.testing.assert_array_equal(audio, dtmf.generate("1 2", RATE))


@pytest.mark.parametrize("point", ["submit-start", "submit-answered"])
def test_crash_in_the_submit_window_never_submits_twice(tmp_path, emulator, point):
    """Between "intent stored" and "id stored" the outcome is unknown: reconcile, never
    resubmit blindly.

    A kill before the request reached the server leaves no transcript in the
    server's list, so the uploader submits once; a kill after the server
    accepted it finds that transcript in the list and adopts it.
    """
    spool_dir = tmp_path / "spool"
    proc = tool(emulator, spool_dir, "--record", "3 4", "--upload", crash_at=point)
    proc.communicate(timeout=60)
    assert proc.returncode == 137
    final_run(emulator, spool_dir)
    spool = Spool(SpoolParams(spool_dir, min_free_bytes=0), owner=False)
    (row,) = spool.list()
    assert row.state == st.COMPLETED, row.last_error
    assert list(emulator.state.submissions_by_hash.values()) == [1]
