"""A real HTTP receiver on loopback for the outbox tests: scripted answers, deduplication.

It does what a careful receiver does with ``Idempotency-Key``: the first
accepted request of a key is kept, a repeat is answered 200 and dropped, so
``accepted`` holds each transcript once however often it arrived.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    """What arrived; ``fail_first`` answers per key before accepting: (status, headers)."""

    fail_first: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    #: Every request, in order: (key, auth header value, raw body).
    requests: list[tuple[str | None, str | None, bytes]] = field(default_factory=list)
    #: Each key's accepted body (parsed), once.
    accepted: dict[str, Any] = field(default_factory=dict)
    seen_per_key: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def answer(self, key: str | None, auth: str | None, body: bytes) -> tuple[int, dict[str, str]]:
        with self.lock:
            self.requests.append((key, auth, body))
            n = self.seen_per_key.get(key or "", 0)
            self.seen_per_key[key or ""] = n + 1
            if n < len(self.fail_first):
                return self.fail_first[n]
            if key is not None and key not in self.accepted:
                self.accepted[key] = json.loads(body)
            return 200, {}

    def posts_of(self, key: str) -> int:
        return sum(1 for k, _a, _b in self.requests if k == key)


def serve(receiver: Receiver) -> Iterator[Receiver]:
    """Run ``receiver`` on an ephemeral loopback port until the generator is closed."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, headers = receiver.answer(
                self.headers.get("Idempotency-Key"), self.headers.get("Authorization"), body
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/transcripts-s3cr3tpath"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
