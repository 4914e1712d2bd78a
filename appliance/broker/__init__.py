"""The fleet owner's token broker: devices get single-use tokens, never the AssemblyAI key.

``appliance broker`` (the ``broker`` extra) is a small ASGI service on uvicorn.
It holds the key, authenticates each device by its own credential (only a
salted scrypt hash is stored), and mints a temporary token of the kind asked
for (``/v3/token`` for streaming, ``/v1/token`` for the agent); recordings go
through its proxy of the pre-recorded API. Modules, one job each:

* :mod:`.limits`: every limit, a named setting with its default, in one place;
* :mod:`.credentials`: device secrets (make, hash, verify in constant time);
* :mod:`.store`: where the hashes live (a JSON file, or SQLite);
* :mod:`.ratelimit`: token buckets, time passed in;
* :mod:`.upstream`: minting at AssemblyAI, with a failure gate (no hot loop);
* :mod:`.proxy`: the pre-recorded API for devices without the key;
* :mod:`.fleet`: the devices' latest check-in;
* :mod:`.metrics`: counters and latency, in Prometheus' text format;
* :mod:`.app`: the ASGI application (routes, limits, audit log);
* :mod:`.server`: the key, the store and uvicorn put together;
* :mod:`.cli`: ``appliance broker [serve|add-device|revoke|list]``;
* :mod:`.local`: a broker on this machine for the demo, the tests and the benchmark.
"""
