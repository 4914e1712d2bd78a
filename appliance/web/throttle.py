"""Wrong control tokens: a growing wait per client, and a log that counts instead of repeating.

A client that sends a wrong token must wait before its next token is even
compared: ``base_delay`` after the first miss, doubling with each further
miss up to ``max_delay``, so guessing runs at a few tries a minute however
fast the client sends. Asking again while it waits gets an immediate refusal
(429 with ``Retry-After``), not a held connection: a scan cannot tie up the
Pi's sockets. Other clients are not affected, and a right token clears the
client's record.

``RefusalLog`` keeps the journal readable under such a scan: the first
refusal of a burst is logged at once, the rest only as one line with a count
when the burst ends (or once per ``report_every`` while it lasts).

Both are plain bookkeeping with the time passed in; the server owns the clock
and the timers. Each keeps at most ``max_clients`` entries, dropping the
longest-quiet one first, so a spray of addresses cannot grow them.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict


@dataclasses.dataclass
class _Misses:
    count: int
    until: float  # no token from this client is compared before then
    last: float


class TokenThrottle:
    """How long each client must wait before its next control token is checked."""

    def __init__(
        self, *, base_delay: float, max_delay: float, forget_after: float, max_clients: int
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Misses] = OrderedDict()

    def wait(self, client: str, now: float) -> float:
        """Seconds before a token from ``client`` may be checked; 0 = now."""
        misses = self._clients.get(client)
        if misses is None:
            return 0.0
        if now - misses.last > self.forget_after:
            del self._clients[client]
            return 0.0
        return max(0.0, misses.until - now)

    def missed(self, client: str, now: float) -> float:
        """Record a wrong token from ``client``; the wait it now has before the next one."""
        misses = self._clients.pop(client, None)
        if misses is None or now - misses.last > self.forget_after:
            misses = _Misses(0, now, now)
        misses.count += 1
        delay = min(self.max_delay, self.base_delay * 2.0 ** min(misses.count - 1, 62))
        misses.until = now + delay
        misses.last = now
        self._clients[client] = misses  # most recent last, so the oldest goes first
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        return delay

    def passed(self, client: str) -> None:
        """A right token: the client's misses are forgiven."""
        self._clients.pop(client, None)

    def __len__(self) -> int:
        return len(self._clients)


@dataclasses.dataclass
class _Burst:
    first: float
    last: float
    reported: float  # when the count was last logged (or the burst began)
    more: int = 0  # refusals since the last line about this burst


@dataclasses.dataclass(frozen=True)
class Summary:
    """One line about refusals that were counted, not logged one by one."""

    client: str
    reason: str
    count: int
    seconds: float
    ended: bool


class RefusalLog:
    """Decides which refusals are logged: the first of a burst, then counts."""

    def __init__(self, *, quiet_after: float, report_every: float, max_clients: int) -> None:
        self.quiet_after = quiet_after
        self.report_every = report_every
        self.max_clients = max_clients
        self._bursts: OrderedDict[tuple[str, str], _Burst] = OrderedDict()

    def refused(self, client: str, reason: str, now: float) -> bool:
        """Count a refusal; True if it is the first of its burst and should be logged now."""
        key = (client, reason)
        burst = self._bursts.get(key)
        if burst is not None and now - burst.last <= self.quiet_after:
            burst.more += 1
            burst.last = now
            self._bursts.move_to_end(key)
            return False
        self._bursts.pop(key, None)
        self._bursts[key] = _Burst(first=now, last=now, reported=now)
        while len(self._bursts) > self.max_clients:
            self._bursts.popitem(last=False)  # its count is lost, never the memory bound
        return True

    def due(self, now: float) -> list[Summary]:
        """Counts to log now: bursts that went quiet, and long ones every ``report_every``."""
        out: list[Summary] = []
        for key, burst in list(self._bursts.items()):
            ended = now - burst.last > self.quiet_after
            if ended or now - burst.reported >= self.report_every:
                if burst.more:
                    out.append(Summary(*key, burst.more, burst.last - burst.reported, ended))
                burst.more = 0
                burst.reported = now
            if ended:
                del self._bursts[key]
        return out

    def flush(self) -> list[Summary]:
        """Every count not yet logged (the server is stopping)."""
        out = [
            Summary(*key, burst.more, burst.last - burst.reported, True)
            for key, burst in self._bursts.items()
            if burst.more
        ]
        self._bursts.clear()
        return out

    def __bool__(self) -> bool:
        return bool(self._bursts)
