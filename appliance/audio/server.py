"""Which sound server this process's audio goes through: PipeWire, PulseAudio, or none.

Raspberry Pi OS Lite runs none: PortAudio opens the ALSA cards themselves
(``hw:``/``plughw:`` devices; ALSA's ``default`` is card 0).  The desktop
image runs PipeWire with its PulseAudio server and ALSA plugin: ALSA's
``default`` (and ``pipewire``) device leads to PipeWire, which picks the
card.  A server is found by its socket, where its client library looks for
it, without loading that library; a PipeWire that is configured as ALSA's
default but not reachable (a system service beside a desktop session) is
named so ``appliance check`` can say why ``default`` will not open.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

#: pipewire-alsa's file that makes PipeWire ALSA's default device, unconditionally.
PIPEWIRE_ALSA_DEFAULT = Path("/etc/alsa/conf.d/99-pipewire-default.conf")

PIPEWIRE = "PipeWire"
PULSEAUDIO = "PulseAudio"
NONE = "none"


@dataclass(frozen=True, slots=True)
class SoundServer:
    """What was found: ``name`` (PIPEWIRE, PULSEAUDIO or NONE) and the sockets seen."""

    name: str
    pipewire_socket: Path | None = None
    pulse_socket: Path | None = None
    #: PipeWire is ALSA's default device here, but no PipeWire is reachable.
    alsa_default_unreachable: bool = False

    def describe(self) -> str:
        if self.name == PIPEWIRE:
            shim = ", PulseAudio clients through pipewire-pulse" if self.pulse_socket else ""
            return f"PipeWire ({self.pipewire_socket}{shim}); ALSA 'default' leads to it"
        if self.name == PULSEAUDIO:
            return f"PulseAudio ({self.pulse_socket}); ALSA 'default' and 'pulse' lead to it"
        return "none: plain ALSA, PortAudio opens the cards (ALSA 'default' is card 0)"


def _runtime_dir(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}")


def _socket(path: Path) -> Path | None:
    return path if path.is_socket() else None


def pipewire_socket(environ: Mapping[str, str]) -> Path | None:
    """Where libpipewire connects: $PIPEWIRE_RUNTIME_DIR (else the runtime dir)/$PIPEWIRE_REMOTE."""
    remote = environ.get("PIPEWIRE_REMOTE") or "pipewire-0"
    base = Path(environ.get("PIPEWIRE_RUNTIME_DIR") or _runtime_dir(environ))
    return _socket(base / remote)


def pulse_socket(environ: Mapping[str, str]) -> Path | None:
    """Where libpulse connects: a unix $PULSE_SERVER, else <runtime dir>/pulse/native."""
    server = environ.get("PULSE_SERVER", "")
    if server:
        path = server.removeprefix("unix:")
        return _socket(Path(path)) if path.startswith("/") else None
    return _socket(_runtime_dir(environ) / "pulse" / "native")


def find_sound_server(
    environ: Mapping[str, str] | None = None, pipewire_alsa_default: Path = PIPEWIRE_ALSA_DEFAULT
) -> SoundServer:
    """The sound server this process would reach (PipeWire first: it also serves PulseAudio)."""
    env = os.environ if environ is None else environ
    pipewire, pulse = pipewire_socket(env), pulse_socket(env)
    if pipewire is not None:
        return SoundServer(PIPEWIRE, pipewire, pulse)
    unreachable = pipewire_alsa_default.exists()
    if pulse is not None:
        return SoundServer(PULSEAUDIO, None, pulse, alsa_default_unreachable=unreachable)
    return SoundServer(NONE, alsa_default_unreachable=unreachable)
