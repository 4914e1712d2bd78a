"""WAV segment files that are valid at every durable point, and their recovery.

A segment is a PCM16 mono WAV with the canonical 44-byte header. Samples are
appended with plain ``write``; ``sync`` rewrites the two RIFF size fields for
what has been written and fsyncs, so after a crash the file holds a valid
header for at least everything up to the last sync. Recovery after a crash
or power cut trusts the file length (cut down to whole samples), not the
header, and rewrites the header to match: whatever reached the disk is kept.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterator
from pathlib import Path

HEADER_BYTES = 44
SAMPLE_BYTES = 2  # PCM16 mono
# errno values that mean "the disk (or our share of it) is full".
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def wav_header(rate: int, data_bytes: int) -> bytes:
    """The canonical 44-byte PCM16 mono header for ``data_bytes`` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        rate,
        rate * SAMPLE_BYTES,
        SAMPLE_BYTES,
        16,
        b"data",
        data_bytes,
    )


def _sizes(data_bytes: int) -> tuple[bytes, bytes]:
    return struct.pack("<I", 36 + data_bytes), struct.pack("<I", data_bytes)


def fsync_dir(path: Path) -> None:
    """Make a create/rename/unlink in directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SegmentFile:
    """One open segment being appended to. Not thread-safe; one writer at a time."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.data_bytes = 0  # appended (maybe not yet durable)
        self.durable_bytes = 0  # covered by a synced header
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._fd = fd
        try:
            os.write(fd, wav_header(rate, 0))
            os.fsync(fd)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        fsync_dir(path.parent)

    def append(self, data: bytes | memoryview) -> None:
        """Append PCM bytes whole, or raise OSError having appended nothing."""
        fd = self._fd
        before = HEADER_BYTES + self.data_bytes
        view = memoryview(data)
        try:
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
        except OSError:
            # Keep the file exactly as it was before this call (no torn sample).
            try:
                os.ftruncate(fd, before)
                os.lseek(fd, before, os.SEEK_SET)
            except OSError:
                pass
            raise
        self.data_bytes += len(view)

    def sync(self) -> None:
        """Header sizes for everything appended, then fsync: durable from here on."""
        riff, data = _sizes(self.data_bytes)
        os.pwrite(self._fd, riff, 4)
        os.pwrite(self._fd, data, 40)
        os.fsync(self._fd)
        self.durable_bytes = self.data_bytes

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1

    def abandon(self) -> None:
        """Close without syncing (after a failure); what was durable stays durable."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def recover_segment(path: Path, rate: int) -> int:
    """Make ``path`` a valid WAV for every whole sample on disk; return its data bytes.

    A file shorter than a header (crash during creation) is rewritten as an
    empty valid segment.
    """
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        data_bytes = max(0, size - HEADER_BYTES)
        data_bytes -= data_bytes % SAMPLE_BYTES
        if size < HEADER_BYTES:
            os.ftruncate(fd, 0)
            os.pwrite(fd, wav_header(rate, 0), 0)
        else:
            os.ftruncate(fd, HEADER_BYTES + data_bytes)
            os.pwrite(fd, wav_header(rate, data_bytes), 0)
        os.fsync(fd)
        return data_bytes
    finally:
        os.close(fd)


def segment_data_bytes(path: Path) -> int:
    """Bytes of samples in a closed (or recovered) segment, from its header."""
    with open(path, "rb") as f:
        header = f.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES or header[:4] != b"RIFF" or header[36:40] != b"data":
        raise ValueError(f"not a spool segment: {path.name}")
    (data_bytes,) = struct.unpack_from("<I", header, 40)
    return int(data_bytes)


def segment_rate(path: Path) -> int | None:
    """The sample rate a segment's header names, or None if the header is not ours."""
    with open(path, "rb") as f:
        header = f.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES or header[:4] != b"RIFF" or header[8:16] != b"WAVEfmt ":
        return None
    (rate,) = struct.unpack_from("<I", header, 24)
    return int(rate)


def segment_is_whole(path: Path) -> bool:
    """Does the header account for exactly the whole samples in the file (no repair needed)?"""
    size = path.stat().st_size
    try:
        data_bytes = segment_data_bytes(path)
    except ValueError:
        return False
    return data_bytes % SAMPLE_BYTES == 0 and HEADER_BYTES + data_bytes == size


def iter_pcm(paths: list[Path], chunk_bytes: int) -> Iterator[bytes]:
    """The samples of ``paths`` one after another, in chunks (never all in memory)."""
    for path in paths:
        remaining = segment_data_bytes(path)
        with open(path, "rb") as f:
            f.seek(HEADER_BYTES)
            while remaining > 0:
                block = f.read(min(chunk_bytes, remaining))
                if not block:
                    break
                remaining -= len(block)
                yield block


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS
