"""A stand-in for systemd's notification socket: what ``sd_notify`` sends, with arrival times."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from pathlib import Path


class NotifyListener:
    """Binds an AF_UNIX datagram socket; set ``NOTIFY_SOCKET=<path>`` in the child's environment."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="bench-notify-")
        self.path = str(Path(self._dir) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self.ready_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            text = data.decode(errors="replace")
            self.messages.append((now, text))
            if "READY=1" in text.split("\n") and self.ready_at is None:
                self.ready_at = now
                self.ready.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
            os.rmdir(self._dir)


def notify(message: str) -> None:
    """sd_notify for the benchmark's own workloads (no-op without NOTIFY_SOCKET)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(path)
        s.send(message.encode())
