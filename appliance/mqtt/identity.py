"""The device's id: random once, then the same across restarts (kept in the state directory).

Topics, the MQTT client id and Home Assistant's unique ids are built from it,
so a device keeps its entities after a reboot or a reinstall that keeps state.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

#: The file in the state directory that holds the id.
DEVICE_ID_FILE = "device-id"
#: Hex characters in a new id (48 bits: unique in any fleet, short in a topic).
DEVICE_ID_HEX = 12
_VALID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def device_id(state_dir: Path) -> str:
    """The id stored in ``state_dir``, made (and written durably) on first use."""
    path = state_dir / DEVICE_ID_FILE
    try:
        found = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        found = ""
    if _VALID.match(found):
        return found
    new = secrets.token_hex(DEVICE_ID_HEX // 2)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(new + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return new
