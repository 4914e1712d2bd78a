"""The MQTT component: the event feed out to a broker, commands in, never in audio's way.

It runs on the daemon's event loop (``aiomqtt`` drives paho-mqtt's socket
there; the blocking connect runs on a worker thread), reads only the event
feed (its own bounded subscription) and drives the daemon only through the
controls the local page uses. A broker that is down, slow or refusing is
retried with the project's full-jitter :class:`Backoff` (a refused login
slowly, after ``auth_retry_seconds``). While it is away, events wait in a
bounded outbox (oldest dropped, counted) and state is kept as its latest
value; on each connect availability, discovery and every retained state are
published again. A message leaves the outbox only once the broker has
acknowledged it, so a broker lost mid-publish gets it again: QoS 1's
at-least-once, never a loss the outbox did not count.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError

from appliance import events as ev
from appliance.config import MqttConfig
from appliance.mqtt import commands, discovery
from appliance.mqtt.discovery import DISCOVERY_MARKER
from appliance.mqtt.mapper import EventMapper, MapperLimits
from appliance.mqtt.topics import STATE_NAMES, Message, Topics
from appliance.protocol.retry import Backoff, RetryLimits
from appliance.secrets import Secret

log = logging.getLogger("appliance.mqtt")

#: The daemon's controls: (action, args) -> {"ok": bool, "error"?: str, ...}.
ControlFn = Callable[[str, dict[str, str]], Awaitable[dict[str, Any]]]
#: CONNACK codes of a refused login: MQTT 3.1.1 (4, 5) and their MQTT 5 reason codes.
AUTH_REFUSED_CODES = frozenset({4, 5, 134, 135})
#: The kinds whose latest event is state (seeded from the feed when the bridge starts).
_STATE_KINDS: tuple[type[ev.Event], ...] = (
    ev.StateChanged,
    ev.SessionPhase,
    ev.SpoolStatus,
    ev.ErrorReported,
    ev.MicLevel,
    ev.VolumeChanged,
    ev.MuteChanged,
)


@dataclasses.dataclass(frozen=True)
class BridgeLimits:
    """Timeouts of the broker's round trips (a slow broker is a failed attempt, retried)."""

    connect_timeout_seconds: float = 10.0
    publish_timeout_seconds: float = 10.0
    #: How long a clean stop may spend saying ``offline``.
    goodbye_timeout_seconds: float = 1.0


def base_topic(settings: MqttConfig, device_id: str) -> str:
    return (settings.base_topic or f"appliance/{device_id}").rstrip("/")


def tls_context(settings: MqttConfig) -> ssl.SSLContext | None:
    """The TLS context for ``mqtt.tls`` (server verified; a client certificate if given)."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ca_file) if settings.ca_file is not None else None
    )
    if settings.client_cert_file is not None:
        key = settings.client_key_file
        context.load_cert_chain(str(settings.client_cert_file), str(key) if key else None)
    return context


def _port(settings: MqttConfig) -> int:
    if settings.port is not None:
        return settings.port
    return 8883 if settings.tls else 1883


def auth_refused(exc: BaseException) -> bool:
    """Whether the broker refused the login (wrong user or password, not authorised)."""
    rc = getattr(exc, "rc", None)
    value = getattr(rc, "value", rc)
    # Only a CONNACK's code: paho's own error numbers (4 is "not connected") overlap them.
    return isinstance(exc, MqttConnectError) and value in AUTH_REFUSED_CODES


class MqttBridge:
    """One device's MQTT connection: :meth:`run` until cancelled."""

    def __init__(
        self,
        settings: MqttConfig,
        events: ev.EventBus,
        *,
        device_id: str,
        state_dir: Path,
        version: str,
        retry: RetryLimits,
        password: Secret | None = None,
        control: ControlFn | None = None,
        limits: BridgeLimits | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.events = events
        self.device_id = device_id
        self.version = version
        self.control = control
        self.limits = limits or BridgeLimits()
        self.topics = Topics(base_topic(settings, device_id))
        self.mapper = EventMapper(
            self.topics,
            version,
            MapperLimits(
                partials=settings.partials,
                partial_interval_seconds=settings.partial_interval_seconds,
                level_interval_seconds=settings.level_interval_seconds,
                qos=settings.qos,
            ),
        )
        self._password = password
        self._marker = state_dir / DISCOVERY_MARKER
        self._rng = rng or random.Random()
        self._backoff = Backoff(retry, self._rng)
        self._outbox: deque[Message] = deque(maxlen=settings.outbox_messages)
        self._dirty: dict[str, Message] = {}  # retained state not yet acknowledged
        self._wakeup = asyncio.Event()
        #: Set while connected to the broker.
        self.connected = asyncio.Event()
        #: Counters for status and tests.
        self.connects = 0
        self.failures = 0
        self.dropped = 0  # events the full outbox pushed out
        self.last_problem: str | None = None

    # ------------------------------------------------------------ the feed

    def _offer(self, messages: list[Message]) -> None:
        for message in messages:
            if message.retain:
                self._dirty[message.topic] = message
            else:
                if len(self._outbox) == self._outbox.maxlen:
                    self.dropped += 1
                self._outbox.append(message)
        if messages:
            self._wakeup.set()

    async def _follow(self, subscription: ev.Subscription) -> None:
        seen_dropped = 0
        async for published in subscription:
            self._offer(self.mapper.map(published))
            if subscription.dropped != seen_dropped:
                log.warning("MQTT fell behind the event feed: %d events lost", subscription.dropped)
                seen_dropped = subscription.dropped

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Follow the feed and keep a connection to the broker until cancelled."""
        subscription = self.events.subscribe()
        for kind in _STATE_KINDS:  # what happened before the bridge started
            latest = self.events.latest(kind)
            if latest is not None:
                self._offer([m for m in self.mapper.map(latest) if m.retain])
        follower = asyncio.create_task(self._follow(subscription), name="mqtt-feed")
        try:
            await self._connect_forever()
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            subscription.close()

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.host,
            _port(s),
            username=s.username,
            password=self._password.reveal() if self._password is not None else None,
            identifier=s.client_id or f"appliance-{self.device_id}",
            will=aiomqtt.Will(self.topics.availability, "offline", qos=1, retain=True),
            keepalive=s.keepalive_seconds,
            timeout=self.limits.connect_timeout_seconds,
            tls_context=tls_context(s),
            logger=logging.getLogger("appliance.mqtt.client"),
        )

    async def _connect_forever(self) -> None:
        where = f"{self.settings.host}:{_port(self.settings)}"
        while True:
            try:
                async with self._client() as client:
                    self._backoff.reset()
                    self.connects += 1
                    if self.last_problem is not None:
                        log.warning("MQTT broker %s reachable again", where)
                    else:
                        log.info("MQTT connected to %s as %s", where, self.topics.base)
                    self.last_problem = None
                    await self._connected(client)
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                self.failures += 1
                if auth_refused(exc):
                    delay = self.settings.auth_retry_seconds + self._rng.uniform(
                        0, self._backoff.limits.base_seconds
                    )
                    problem = (
                        f"MQTT broker {where} refused the login ({exc}): check mqtt.username "
                        f"and the password (mqtt.password_file); retrying in {delay:.0f} s"
                    )
                    log.error("%s", problem)
                else:
                    delay = self._backoff.next_delay()
                    problem = f"MQTT broker {where} unavailable ({exc}); retrying in {delay:.1f} s"
                    # Once per outage at warning level: a broker away for a day is one line.
                    log.log(logging.DEBUG if self.last_problem else logging.WARNING, "%s", problem)
                self.last_problem = problem
                await asyncio.sleep(delay)
            except Exception as exc:  # a bug or a bad file (the CA): never the daemon's end
                self.connected.clear()
                self.failures += 1
                delay = self._backoff.next_delay()
                self.last_problem = f"MQTT failed ({exc!r}); retrying in {delay:.1f} s"
                log.exception("%s", self.last_problem)
                await asyncio.sleep(delay)

    async def _connected(self, client: aiomqtt.Client) -> None:
        qos = self.settings.qos
        timeout = self.limits.publish_timeout_seconds
        try:
            await client.publish(
                self.topics.availability, "online", qos=1, retain=True, timeout=timeout
            )
            await self._publish_discovery(client)
            for message in self.mapper.retained():  # republished on every connect
                self._dirty.setdefault(message.topic, message)
            self._wakeup.set()
            await client.subscribe(self.topics.commands, qos=qos, timeout=timeout)
            self.connected.set()
            sender = asyncio.create_task(self._send(client), name="mqtt-send")
            receiver = asyncio.create_task(self._receive(client), name="mqtt-receive")
            try:
                done, _ = await asyncio.wait(
                    {sender, receiver}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    task.result()  # the connection's failure, raised
                raise aiomqtt.MqttError("connection closed")
            finally:
                for task in (sender, receiver):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await task
        except asyncio.CancelledError:
            # Stopping: send what is waiting (the last session's account), then say so
            # rather than leave it to the will (which fires only on a loss).
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain(client), self.limits.goodbye_timeout_seconds)
            with contextlib.suppress(Exception):
                await client.publish(
                    self.topics.availability,
                    "offline",
                    qos=1,
                    retain=True,
                    timeout=self.limits.goodbye_timeout_seconds,
                )
            raise
        finally:
            self.connected.clear()

    async def _publish_discovery(self, client: aiomqtt.Client) -> None:
        s = self.settings
        timeout = self.limits.publish_timeout_seconds
        if s.discovery:
            messages = discovery.discovery_messages(
                s.discovery_prefix, self.device_id, self.topics, self.version
            )
            for m in messages:
                await client.publish(m.topic, m.payload, qos=1, retain=True, timeout=timeout)
            try:
                write_marker(self._marker, [m.topic for m in messages])
            except OSError as exc:  # removal when disabled then needs the broker's own tools
                log.warning("cannot remember the discovery published (%s): %s", self._marker, exc)
        elif self._marker.exists():
            await remove_published(client, self._marker, timeout)

    async def _send(self, client: aiomqtt.Client) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._drain(client)

    async def _drain(self, client: aiomqtt.Client) -> None:
        """Publish state, then events, each leaving once the broker acknowledged it."""
        timeout = self.limits.publish_timeout_seconds
        while self._dirty or self._outbox:
            message = next(iter(self._dirty.values())) if self._dirty else self._outbox[0]
            await client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                timeout=timeout,
            )
            # Acknowledged: only now does it leave (a newer state may have replaced it).
            if message.retain:
                if self._dirty.get(message.topic) is message:
                    del self._dirty[message.topic]
            elif self._outbox and self._outbox[0] is message:
                self._outbox.popleft()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for incoming in client.messages:
            name = self.topics.command_name(str(incoming.topic))
            if name is None:
                continue
            payload = incoming.payload
            raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
            outcome = commands.parse(name, bytes(raw))
            answer: dict[str, Any] | None = None
            if incoming.retain and isinstance(outcome, commands.Command):
                outcome = commands.Refused(
                    name, "a retained command is not carried out", outcome.request_id
                )
            elif isinstance(outcome, commands.Command):
                if self.control is None:
                    answer = {"ok": False, "error": "controls are not available"}
                else:
                    try:
                        answer = await self.control(outcome.action, outcome.args)
                    except Exception as exc:
                        log.exception("MQTT command %s failed", name)
                        answer = {"ok": False, "error": f"failed: {exc}"}
            result = commands.result_payload(outcome, answer)
            log.info("MQTT command %s: %s", name[:40], "done" if result["ok"] else result)
            body = json.dumps(result, separators=(",", ":"))
            self._offer([Message(self.topics.command_result, body, qos=self.settings.qos)])


# ---------------------------------------------------------------- discovery removal


def write_marker(path: Path, topics: list[str]) -> None:
    """Remember the discovery topics published, so a later start can remove them."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"topics": topics}), encoding="utf-8")
    tmp.replace(path)


def _marked_topics(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    found = data.get("topics") if isinstance(data, dict) else None
    return [t for t in found if isinstance(t, str)] if isinstance(found, list) else []


async def remove_published(client: aiomqtt.Client, marker: Path, timeout: float) -> int:
    """Clear the discovery configs the marker names; then forget the marker."""
    removed = discovery.removal_messages(_marked_topics(marker))
    for m in removed:
        await client.publish(m.topic, m.payload, qos=1, retain=True, timeout=timeout)
    marker.unlink(missing_ok=True)
    log.info("MQTT discovery removed (%d entities)", len(removed))
    return len(removed)


async def remove_discovery(
    settings: MqttConfig,
    *,
    device_id: str,
    state_dir: Path,
    password: Secret | None = None,
    limits: BridgeLimits | None = None,
) -> int:
    """With MQTT disabled: remove what an earlier run published (discovery and retained state).

    Returns how many discovery entities were removed; a broker that cannot be
    reached leaves the marker, so the next start tries again.
    """
    marker = state_dir / DISCOVERY_MARKER
    if not marker.exists():
        return 0
    limits = limits or BridgeLimits()
    topics = Topics(base_topic(settings, device_id))
    client = aiomqtt.Client(
        settings.host,
        _port(settings),
        username=settings.username,
        password=password.reveal() if password is not None else None,
        identifier=settings.client_id or f"appliance-{device_id}",
        timeout=limits.connect_timeout_seconds,
        tls_context=tls_context(settings),
    )
    async with client:
        timeout = limits.publish_timeout_seconds
        for name in STATE_NAMES:
            await client.publish(topics.state(name), "", qos=1, retain=True, timeout=timeout)
        await client.publish(topics.availability, "", qos=1, retain=True, timeout=timeout)
        return await remove_published(client, marker, timeout)
