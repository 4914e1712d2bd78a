"""Which sound server is found: by the sockets its client library would connect to."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.audio.server import NONE, PIPEWIRE, PULSEAUDIO, find_sound_server


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short private directory (a unix socket path must fit in 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="srv-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def listen(path: Path, held: list[socket.socket]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    held.append(s)
    return path


def test_pipewire_with_its_pulse_server_is_pipewire(
    runtime_dir: Path, sockets: list[socket.socket]
) -> None:
    pw = listen(runtime_dir / "pipewire-0", sockets)
    pulse = listen(runtime_dir / "pulse" / "native", sockets)
    found = find_sound_server({"XDG_RUNTIME_DIR": str(runtime_dir)}, runtime_dir / "absent")
    assert (found.name, found.pipewire_socket, found.pulse_socket) == (PIPEWIRE, pw, pulse)
    assert "pipewire-pulse" in found.describe() and not found.alsa_default_unreachable


def test_pulse_socket_alone_is_pulseaudio(runtime_dir: Path, sockets: list[socket.socket]) -> None:
    pulse = listen(runtime_dir / "pulse" / "native", sockets)
    found = find_sound_server({"XDG_RUNTIME_DIR": str(runtime_dir)}, runtime_dir / "absent")
    assert (found.name, found.pulse_socket) == (PULSEAUDIO, pulse)


def test_no_socket_is_plain_alsa(runtime_dir: Path) -> None:
    (runtime_dir / "pulse").mkdir()
    (runtime_dir / "pulse" / "native").write_text("")  # a file, not a socket
    found = find_sound_server({"XDG_RUNTIME_DIR": str(runtime_dir)}, runtime_dir / "absent")
    assert found.name == NONE and "plain ALSA" in found.describe()


def test_the_client_libraries_overrides_are_followed(
    runtime_dir: Path, sockets: list[socket.socket]
) -> None:
    pw = listen(runtime_dir / "pw" / "custom-remote", sockets)
    pulse = listen(runtime_dir / "elsewhere", sockets)
    env = {
        "XDG_RUNTIME_DIR": str(runtime_dir / "empty"),
        "PIPEWIRE_RUNTIME_DIR": str(runtime_dir / "pw"),
        "PIPEWIRE_REMOTE": "custom-remote",
        "PULSE_SERVER": f"unix:{pulse}",
    }
    found = find_sound_server(env, runtime_dir / "absent")
    assert (found.name, found.pipewire_socket, found.pulse_socket) == (PIPEWIRE, pw, pulse)
    env["PULSE_SERVER"] = "tcp:192.0.2.1"  # not a local socket: not counted
    assert find_sound_server(env, runtime_dir / "absent").pulse_socket is None


def test_pipewire_as_alsa_default_without_a_reachable_pipewire_is_flagged(
    runtime_dir: Path,
) -> None:
    conf = runtime_dir / "99-pipewire-default.conf"
    conf.write_text("pcm.!default { type pipewire }\n")
    found = find_sound_server({"XDG_RUNTIME_DIR": str(runtime_dir)}, conf)
    assert found.name == NONE and found.alsa_default_unreachable
