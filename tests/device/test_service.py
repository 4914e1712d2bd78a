"""systemd notifications on a socket of our own: READY, STATUS, WATCHDOG cadence, STOPPING."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.events import EventBus, SpoolStatus, StateChanged
from appliance.service import (
    ServiceNotifier,
    Watchdog,
    capture_liveness,
    status_line,
    watchdog_interval,
)

RECV_TIMEOUT = 3.0


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(RECV_TIMEOUT)

    def recv(self) -> str:
        return self.sock.recv(4096).decode()

    def recv_all(self) -> list[str]:
        """Everything queued right now, without waiting."""
        self.sock.setblocking(False)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(RECV_TIMEOUT)
        return out


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    path = tmp_path / "notify"
    sock = NotifySocket(path)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield sock
    finally:
        sock.sock.close()


def test_notify_sequence_ready_status_stopping(notify_socket: NotifySocket) -> None:
    notifier = ServiceNotifier()
    assert notifier.enabled
    notifier.ready("idle, live transcription")
    assert notify_socket.recv() == "READY=1\nSTATUS=idle, live transcription"
    notifier.status("listening")
    assert notify_socket.recv() == "STATUS=listening"
    notifier.stopping("stopping: closing session")
    assert notify_socket.recv() == "STOPPING=1\nSTATUS=stopping: closing session"


def test_repeated_status_is_sent_once(notify_socket: NotifySocket) -> None:
    notifier = ServiceNotifier()
    for text in ("listening", "listening", "agent speaking", "agent speaking", "listening"):
        notifier.status(text)
    assert notify_socket.recv_all() == [
        "STATUS=listening",
        "STATUS=agent speaking",
        "STATUS=listening",
    ]


def test_without_notify_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = ServiceNotifier()
    assert not notifier.enabled
    notifier.ready()
    notifier.status("idle")
    notifier.watchdog()
    notifier.stopping()


def test_a_failing_sender_never_raises() -> None:
    def broken(message: str) -> None:
        raise OSError("socket gone")

    notifier = ServiceNotifier(broken)
    notifier.ready()
    notifier.status("idle")


def test_status_lines_for_states() -> None:
    assert status_line("idle", "live") == "idle, live transcription"
    assert status_line("idle", "agent") == "idle, voice agent"
    assert status_line("listening", "live") == "listening"
    assert status_line("agent_speaking", "agent") == "agent speaking"
    assert status_line("offline", "record", waiting=3) == "offline, 3 recordings waiting"
    assert status_line("offline", waiting=1) == "offline, 1 recording waiting"
    assert status_line("error", detail="microphone missing") == "microphone missing"


def test_watchdog_interval_is_half_of_watchdog_usec_and_respects_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}, pid=42) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "42"}, pid=42) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "7"}, pid=42) == 0.0
    assert watchdog_interval({}, pid=42) == 0.0
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}, pid=42) == 0.0


class FakeCapture:
    """Stands in for the capture's liveness: a monotonic timestamp, and whether it reopens."""

    def __init__(self) -> None:
        self.last_callback_time = time.monotonic()
        self.reopening = False

    def beat(self) -> None:
        self.last_callback_time = time.monotonic()


async def test_watchdog_pings_at_half_the_interval_while_capture_lives(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 100 ms: pings every 50 ms
    capture = FakeCapture()
    watchdog = Watchdog(ServiceNotifier(), capture_liveness(capture), stale_after=2.0)
    assert watchdog.interval == pytest.approx(0.05)
    task = watchdog.start()
    assert task is not None
    loop = asyncio.get_running_loop()
    received = []
    started = time.monotonic()
    while len(received) < 5:
        capture.beat()
        received.append(await loop.run_in_executor(None, notify_socket.recv))
    elapsed = time.monotonic() - started
    await watchdog.stop()
    assert received == ["WATCHDOG=1"] * 5
    # Five pings need at least four intervals: pinging is paced, not a busy loop.
    assert elapsed >= 4 * 0.05 * 0.9


async def test_watchdog_pings_stop_when_capture_goes_stale(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = FakeCapture()
    now = [1000.0]
    capture.last_callback_time = 1000.0
    watchdog = Watchdog(
        ServiceNotifier(), capture_liveness(capture), interval=0.05, stale_after=0.5,
        clock=lambda: now[0],
    )  # fmt: skip
    assert watchdog.tick()
    now[0] = 1000.4
    assert watchdog.tick()
    now[0] = 1000.6  # the capture thread has not called back for 0.6 s
    assert not watchdog.tick()
    assert not watchdog.tick()
    assert "capture" in (watchdog.unhealthy_reason or "")
    capture.last_callback_time = 1000.6  # it recovered
    assert watchdog.tick()
    assert notify_socket.recv_all() == ["WATCHDOG=1"] * 3


async def test_watchdog_task_goes_quiet_with_a_dead_capture(
    notify_socket: NotifySocket,
) -> None:
    capture = FakeCapture()
    watchdog = Watchdog(ServiceNotifier(), capture_liveness(capture), interval=0.02,
                        stale_after=0.1)  # fmt: skip
    watchdog.start()
    await asyncio.sleep(0.01)  # let the task run once
    assert notify_socket.recv_all()[:1] == ["WATCHDOG=1"]
    # The capture stops calling back: within stale_after the pings must stop for good.
    await asyncio.sleep(0.3)
    notify_socket.recv_all()
    await asyncio.sleep(0.2)
    assert notify_socket.recv_all() == []
    assert watchdog.withheld > 0
    await watchdog.stop()


async def test_blocked_event_loop_sends_no_pings(notify_socket: NotifySocket) -> None:
    capture = FakeCapture()
    watchdog = Watchdog(ServiceNotifier(), capture_liveness(capture), interval=0.02)
    watchdog.start()
    await asyncio.sleep(0.01)  # let the task run once
    assert notify_socket.recv_all()[:1] == ["WATCHDOG=1"]
    time.sleep(0.3)  # the loop is blocked on purpose
    assert notify_socket.recv_all() == []
    await watchdog.stop()


def test_a_microphone_being_reopened_is_not_a_hang() -> None:
    now = [time.monotonic()]  # the liveness of a reopening source is the real clock's
    capture = FakeCapture()
    capture.last_callback_time = now[0] - 10.0  # unplugged ten seconds ago
    watchdog = Watchdog(ServiceNotifier(lambda m: None), capture_liveness(capture),
                        interval=1.0, stale_after=2.0, clock=lambda: now[0])  # fmt: skip
    assert not watchdog.healthy()[0]
    capture.reopening = True  # lost, and its supervisor is trying to open it again
    assert watchdog.healthy()[0]


def test_before_the_first_callback_a_grace_period_applies() -> None:
    now = [50.0]
    capture = FakeCapture()
    capture.last_callback_time = 0.0
    watchdog = Watchdog(ServiceNotifier(lambda m: None), capture_liveness(capture),
                        interval=1.0, first_capture_grace=5.0, clock=lambda: now[0])  # fmt: skip
    assert watchdog.healthy()[0]
    now[0] = 56.0
    assert not watchdog.healthy()[0]


async def test_status_follows_state_and_spool_events(notify_socket: NotifySocket) -> None:
    bus = EventBus()
    bus.publish(StateChanged(state="idle", mode="live"))
    notifier = ServiceNotifier()
    task = asyncio.create_task(notifier.follow(bus))
    loop = asyncio.get_running_loop()

    async def next_message() -> str:
        return await loop.run_in_executor(None, notify_socket.recv)

    assert await next_message() == "STATUS=idle, live transcription"
    bus.publish(StateChanged(state="listening", mode="live"))
    assert await next_message() == "STATUS=listening"
    bus.publish(StateChanged(state="listening", mode="live"))  # same line: not resent
    bus.publish(StateChanged(state="offline", mode="record"))
    assert await next_message() == "STATUS=offline"
    bus.publish(SpoolStatus(waiting=3))
    assert await next_message() == "STATUS=offline, 3 recordings waiting"
    bus.publish(StateChanged(state="error", mode="live", detail="microphone missing"))
    assert await next_message() == "STATUS=microphone missing"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
