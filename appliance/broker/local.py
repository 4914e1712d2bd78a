"""A broker on this machine for the demo, the tests and the benchmark.

:func:`local_broker` enrols devices into a fresh JSON store, starts the broker
on a loopback port in front of ``base_url`` (the emulator) and writes each
device's credential to a 0600 file, as ``systemd-creds`` would hand it over
on a real device. Only the broker is given the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

from appliance.broker import credentials
from appliance.broker.limits import DEFAULT_LIMITS, Limits
from appliance.broker.server import BrokerThread, build_app, upstream_urls
from appliance.broker.store import DeviceRecord, FileStore
from appliance.secrets import Secret, register_secret


@dataclasses.dataclass
class LocalBroker:
    thread: BrokerThread
    store: FileStore
    credential_files: dict[str, Path]

    @property
    def url(self) -> str:
        return self.thread.url

    def credential(self, name: str) -> Secret:
        return register_secret(Secret(self.credential_files[name].read_text().strip()))


def enrol(store: FileStore, name: str, directory: Path) -> Path:
    """Add ``name`` to ``store``; its credential goes to ``directory/<name>.credential``."""
    secret = credentials.new_secret()
    store.add(DeviceRecord(name=name, secret=credentials.hash_secret(secret), created=time.time()))
    path = directory / f"{name}.credential"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(credentials.credential(name, secret) + "\n")
    register_secret(credentials.credential(name, secret))
    return path


@contextlib.contextmanager
def local_broker(
    base_url: str,
    key: str,
    directory: Path,
    devices: tuple[str, ...] = ("device-1",),
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Iterator[LocalBroker]:
    """A running broker holding ``key``, with ``devices`` enrolled; stopped on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    store = FileStore(directory / "broker" / "devices.json")
    files = {name: enrol(store, name, directory) for name in devices}
    app = build_app(
        store,
        register_secret(Secret(key, source="broker")),
        upstream_urls(base_url=base_url),
        limits=limits,
    )
    with BrokerThread(app) as thread:
        yield LocalBroker(thread, store, files)
