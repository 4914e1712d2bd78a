"""Project-wide pytest plugins: the PulseAudio test stack, the cloud emulator, mock pins."""

import importlib.util

pytest_plugins = [
    name
    for name in ("tests.fixtures.pulse", "tests.fixtures.emulator", "tests.fixtures.pins")
    if importlib.util.find_spec(name) is not None
]
