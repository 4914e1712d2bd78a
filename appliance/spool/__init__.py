"""Durable offline spool, uploader and field recorder."""

from appliance.spool.spool import (
    RecordingWriter,
    Spool,
    SpoolBusy,
    SpoolError,
    SpoolFull,
    SpoolParams,
    SpoolUnavailable,
)

__all__ = [
    "RecordingWriter",
    "Spool",
    "SpoolBusy",
    "SpoolError",
    "SpoolFull",
    "SpoolParams",
    "SpoolUnavailable",
]
