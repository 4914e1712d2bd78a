"""Project-wide pytest plugins: the PulseAudio test stack and the cloud emulator."""

import importlib.util

pytest_plugins = [
    name
    for name in ("tests.fixtures.pulse", "tests.fixtures.emulator")
    if importlib.util.find_spec(name) is not None
]
