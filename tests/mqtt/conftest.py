"""A real Mosquitto on loopback for the MQTT tests: password file, ACL, optional TLS.

The device logs in as ``device`` (may write its own topics and Home
Assistant's discovery); the tests watch as ``observer`` (reads everything,
writes only commands), as Home Assistant or a dashboard would.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DEVICE_USER, DEVICE_PASSWORD = "device", "device-secret"
OBSERVER_USER, OBSERVER_PASSWORD = "observer", "observer-secret"
#: How long the broker may take to listen after it is started.
BROKER_START_TIMEOUT = 5.0

ACL = """\
user device
topic readwrite appliance/#
topic readwrite homeassistant/#

user observer
topic read #
topic write appliance/+/cmd/#
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1 (EC, valid a day)."""
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=appliance test CA")  # fmt: skip
    run("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


class Broker:
    """``mosquitto`` in a process of its own: :meth:`start`, :meth:`stop` (a kill), again."""

    def __init__(self, directory: Path, *, tls: bool = False) -> None:
        self.directory = directory
        self.port = _free_port()
        self.tls = tls
        self.ca: Path | None = None
        self.log = directory / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        passwords = directory / "passwd"
        passwords.touch(mode=0o600)
        for user, password in ((DEVICE_USER, DEVICE_PASSWORD), (OBSERVER_USER, OBSERVER_PASSWORD)):
            subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True)
        (directory / "acl").write_text(ACL)
        lines = [
            "user root",  # the fixture's files are the test's; no privilege drop
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous false",
            f"password_file {passwords}",
            f"acl_file {directory / 'acl'}",
            "persistence false",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if tls:
            self.ca, cert, key = make_certs(directory)
            lines += [f"cafile {self.ca}", f"certfile {cert}", f"keyfile {key}"]
        self.config = directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + BROKER_START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"mosquitto did not start: {err}{self.log_text()}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill it (as a crash or a power cut would: no clean goodbye to anyone)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def cli_args(self, user: str = OBSERVER_USER, password: str = OBSERVER_PASSWORD) -> list[str]:
        """Arguments for ``mosquitto_sub``/``mosquitto_pub`` to reach this broker."""
        args = ["-h", "127.0.0.1", "-p", str(self.port), "-u", user, "-P", password]
        if self.ca is not None:
            args += ["--cafile", str(self.ca)]
        return args


def _needs_mosquitto() -> None:
    if shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd") is None:
        pytest.fail("mosquitto is not installed: run scripts/bootstrap.sh --test")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running Mosquitto with a password file and an ACL, on a free loopback port."""
    _needs_mosquitto()
    directory = tmp_path / "broker"
    directory.mkdir()
    b = Broker(directory)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Broker]:
    """The same, listening only with TLS (a CA made for the test)."""
    _needs_mosquitto()
    directory = tmp_path / "tls-broker"
    directory.mkdir()
    b = Broker(directory, tls=True)
    b.start()
    try:
        yield b
    finally:
        b.stop()
