"""The connection layer shared by live transcription and the voice agent.

Each rule lives in one module, sans I/O where it can be, with its own tests:

* :mod:`~appliance.connection.retry`: full-jitter backoff with a floor, and the
  one rule for a server's ``Retry-After`` (tokens, REST, WebSocket upgrades);
* :mod:`~appliance.connection.pacer`: audio never leads wall time since the
  session began by more than one frame;
* :mod:`~appliance.connection.messages`: every server message parsed under one
  guard, so no message can end a session;
* :mod:`~appliance.connection.policy`: when a session connects again (one
  quick reconnect, then backoff, a slow retry when refused);
* :mod:`~appliance.connection.failures`, :mod:`~appliance.connection.websocket`:
  one set of names for a failed attempt, and one way to open a session socket;
* :mod:`~appliance.connection.tokens`: one token coordinator per product,
  single flight, shared by prefetch and connect.
"""
