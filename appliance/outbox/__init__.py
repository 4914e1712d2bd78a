"""Delivery of finished transcripts off the device (the outbox).

* :mod:`~appliance.outbox.delivery`: the durable queue's loop (:class:`Outbox`);
* :mod:`~appliance.outbox.destinations`: one attempt to a URL or a command;
* :mod:`~appliance.outbox.payload`: the JSON a transcript is sent as.

The rules (what an answer means, when to retry, the idempotency key) are sans-I/O
in :mod:`appliance.protocol.outbox`.
"""
