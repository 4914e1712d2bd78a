"""The benchmark's measurement helpers measure, and ``--quick`` runs end to end.

No timing thresholds here: the figures themselves live in BENCHMARKS.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.bench.measure import (
    RssSampler,
    Window,
    descendants,
    percentile,
    read_cpu_times,
    read_memory_kib,
    tree_cpu_seconds,
)
from scripts.bench.notify import NotifyListener

ROOT = Path(__file__).resolve().parent.parent
BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def busy_child(seconds: float, *, in_grandchild: bool = False) -> subprocess.Popen:
    """A child that burns ``seconds`` of CPU (in its own child when asked), then sleeps."""
    code = BUSY.format(s=seconds) + "time.sleep(30)\n"
    if in_grandchild:
        code = (
            "import subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', {code!r}])\n"
            "time.sleep(30)\n"
        )
    return subprocess.Popen([sys.executable, "-c", code])


def wait_for_cpu(pid: int, seconds: float, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    used = tree_cpu_seconds(pid)
    while used < seconds and time.monotonic() < deadline:
        time.sleep(0.05)
        used = tree_cpu_seconds(pid)
    return used


def test_cpu_of_a_child_comes_from_proc_stat():
    child = busy_child(0.3)
    try:
        used = wait_for_cpu(child.pid, 0.3)
        times = read_cpu_times(child.pid)
        assert used >= 0.3
        assert times.user + times.system == pytest.approx(used, abs=0.05)
    finally:
        child.kill()
        child.wait()


def test_cpu_of_the_tree_includes_live_grandchildren():
    child = busy_child(0.3, in_grandchild=True)
    try:
        used = wait_for_cpu(child.pid, 0.3)
        own = read_cpu_times(child.pid).total
        assert used >= 0.3
        assert own < used  # the burn happened in the grandchild, and was still counted
    finally:
        for pid in [*descendants(child.pid), child.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child.wait()


def test_window_reports_cpu_per_minute_of_a_busy_child():
    child = busy_child(5.0)
    try:
        window = Window(child.pid)
        window.begin()
        time.sleep(0.5)
        window.end()
        assert window.cpu > 0
        assert window.seconds >= 0.5
        assert window.cpu_per_audio_minute == pytest.approx(window.cpu * 60 / window.seconds)
    finally:
        child.kill()
        child.wait()


def test_memory_figures_come_from_proc_status():
    mem = read_memory_kib(os.getpid())
    assert 0 < mem["VmRSS"] <= mem["VmHWM"]
    sampler = RssSampler(os.getpid(), period=0.01).start()
    time.sleep(0.1)
    sampler.stop()
    assert sampler.samples and sampler.peak_kib >= sampler.steady_kib() > 0


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([0, 10], 99) == pytest.approx(9.9)
    assert str(percentile([], 50)) == "nan"


def test_notify_listener_sees_ready():
    listener = NotifyListener()
    try:
        subprocess.run(
            [sys.executable, "-c", "from scripts.bench.notify import notify; notify('READY=1')"],
            cwd=ROOT,
            env={**os.environ, "NOTIFY_SOCKET": listener.path, "PYTHONPATH": str(ROOT)},
            check=True,
            timeout=30,
        )
        assert listener.ready.wait(5)
        assert listener.messages[0][1] == "READY=1"
    finally:
        listener.close()


@pytest.mark.audio
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_run_writes_a_report(tmp_path):
    if shutil.which("pulseaudio") is None:
        pytest.skip("pulseaudio is not installed (scripts/bootstrap.sh installs it)")
    pytest.importorskip("assemblyai", reason="the bench extra: pip install -e '.[dev,bench]'")
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [
            sys.executable,
            "scripts/bench.py",
            "--quick",
            "--minutes",
            "0.05",
            "--variants",
            "floor,transport,sdk,d-live",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = out.read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    for label in ("floor: bare PyAudio", "yardstick", "SDK pipeline", "`appliance run`, live"):
        row = next(r for r in rows if label in r)
        cpu = float(row.split("|")[2].strip())  # measured: a number, not "n/a"
        # A bare callback for 3 s can use less CPU than one 10 ms clock tick of the
        # process's accounting, so the floor may read 0.00; the pipelines never do.
        assert cpu > 0 or label.startswith("floor"), row
    assert "press -> first audio byte" in report
