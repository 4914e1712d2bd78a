"""Spool tests use the shared emulator fixture (a real server on loopback)."""

from tests.fixtures.emulator import emulator, emulator_config  # noqa: F401
