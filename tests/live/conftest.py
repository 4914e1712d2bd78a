"""Live-session fixtures (the ``emulator`` fixture comes from the root conftest's plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.spool import Spool

from .helpers import real_spool


@pytest.fixture
def spool(tmp_path) -> Iterator[Spool]:
    """The real spool in a temporary directory; set ``spool.events`` to watch it."""
    s = real_spool(tmp_path)
    try:
        yield s
    finally:
        s.close()
