"""Process exit codes, documented in ``appliance --help`` and the README."""

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    MISSING_COMPONENT = 4
    CHECK_FAILED = 5
    OFFLINE = 6
    INTERRUPTED = 130
