"""Raspberry Pi voice appliance on AssemblyAI's APIs."""

__version__ = "0.1.0"
