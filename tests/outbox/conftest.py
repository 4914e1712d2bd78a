"""Fixtures of the outbox tests: a scripted HTTP receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .receiver import Receiver, serve


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())
