"""Device credentials: a random secret shown once, stored only as a salted scrypt hash.

A device's credential is ``<name>.<secret>``: the name says which record to
check, the secret (256 random bits) is what proves it. Because the secret is
random rather than chosen by a person, scrypt's cost parameters are kept low
(a few milliseconds per check on the build machine): they guard against
nothing a 256-bit secret needs guarding against, while every token request
pays for one check. Comparison is constant-time, and an unknown name costs
the same hash as a known one, so timing tells nobody which names exist.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets

#: Device names: what fits a log field, a file name and a Prometheus label.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
SECRET_BYTES = 32
SALT_BYTES = 16
#: scrypt parameters: N=2**12, r=8 is 4 MiB and a few ms per check (see the module doc).
SCRYPT_N = 2**12
SCRYPT_R = 8
SCRYPT_P = 1
HASH_BYTES = 32
#: Longest credential looked at: anything longer is refused before hashing.
MAX_CREDENTIAL_CHARS = 200


@dataclasses.dataclass(frozen=True)
class HashedSecret:
    """What is stored for a device: salt, hash and the parameters that made it."""

    salt: str  # base64
    digest: str  # base64
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def new_secret() -> str:
    """A fresh random secret (URL-safe base64, no dots)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def credential(name: str, secret: str) -> str:
    """The credential a device presents: ``<name>.<secret>``."""
    return f"{name}.{secret}"


def split_credential(value: str) -> tuple[str, str] | None:
    """``(name, secret)`` of a presented credential, or None if it cannot be one."""
    if len(value) > MAX_CREDENTIAL_CHARS:
        return None
    name, dot, secret = value.partition(".")
    if not dot or not secret or not valid_name(name):
        return None
    return name, secret


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 1024 * 1024,
        dklen=HASH_BYTES,
    )


def hash_secret(secret: str, *, salt: bytes | None = None) -> HashedSecret:
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return HashedSecret(
        salt=base64.b64encode(salt).decode(), digest=base64.b64encode(digest).decode()
    )


#: Checked against when the name is unknown, so an unknown name costs a full check.
_DECOY = hash_secret(new_secret())


def verify(secret: str, stored: HashedSecret | None) -> bool:
    """Whether ``secret`` matches ``stored``; an absent record costs the same and is False."""
    record = stored if stored is not None else _DECOY
    try:
        salt = base64.b64decode(record.salt, validate=True)
        expected = base64.b64decode(record.digest, validate=True)
        actual = _scrypt(secret, salt, record.n, record.r, record.p)
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected) and stored is not None
