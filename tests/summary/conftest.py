"""Summary fixtures: the real spool in a temporary directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.spool import Spool
from tests.spool.helpers import make_spool


@pytest.fixture
def spool(tmp_path) -> Iterator[Spool]:
    s = make_spool(tmp_path)
    try:
        yield s
    finally:
        s.close()
