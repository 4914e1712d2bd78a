"""Device credentials: shown once, stored as a salted hash, checked in constant time."""

from __future__ import annotations

import time

from appliance.broker import credentials


def test_a_secret_verifies_against_its_own_hash_only() -> None:
    secret = credentials.new_secret()
    stored = credentials.hash_secret(secret)
    assert credentials.verify(secret, stored)
    assert not credentials.verify(secret + "x", stored)
    assert not credentials.verify(credentials.new_secret(), stored)


def test_the_stored_hash_holds_neither_the_secret_nor_a_repeatable_digest() -> None:
    secret = credentials.new_secret()
    one, two = credentials.hash_secret(secret), credentials.hash_secret(secret)
    assert secret not in repr(one)
    assert one.salt != two.salt and one.digest != two.digest  # salted


def test_no_record_is_never_a_match_and_costs_a_full_check() -> None:
    secret = credentials.new_secret()
    stored = credentials.hash_secret(secret)
    started = time.perf_counter()
    for _ in range(5):
        credentials.verify(secret, stored)
    known = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(5):
        assert not credentials.verify(secret, None)
    unknown = time.perf_counter() - started
    assert unknown > known / 3  # the decoy hash is computed, not skipped


def test_a_credential_names_its_device_and_malformed_ones_are_refused() -> None:
    assert credentials.split_credential("room-1.abc_DEF-9") == ("room-1", "abc_DEF-9")
    for bad in ("nodot", ".secret", "name.", "bad name.s", "x" * 300 + ".s", "a/b.s"):
        assert credentials.split_credential(bad) is None, bad


def test_a_new_secret_is_long_random_and_dotless() -> None:
    secrets = {credentials.new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) >= 40 and "." not in s for s in secrets)
