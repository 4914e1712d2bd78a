"""The sans-I/O protocol cores: state machines that take events and return actions.

Nothing here opens a socket, starts a thread or reads a clock: time is passed
in, so every rule is plain arithmetic in its tests. The package imports only
the standard library and itself (an import-linter contract checks it).

* :mod:`~appliance.protocol.streaming`: a live transcription session
  (Universal Streaming v3);
* :mod:`~appliance.protocol.agent`: a voice agent conversation;
* :mod:`~appliance.protocol.account`: the one account every mode's session
  ends with (captured = delivered + spooled + skipped + lost);
* the rules of the connection layer both share:
  :mod:`~appliance.protocol.pacer` (never ahead of real time),
  :mod:`~appliance.protocol.retry` (backoff and ``Retry-After``),
  :mod:`~appliance.protocol.policy` (when to connect again),
  :mod:`~appliance.protocol.failures` (names for a failed attempt) and
  :mod:`~appliance.protocol.messages` (the guard every server message passes).

The I/O around them: :mod:`appliance.connection` (sockets, tokens),
:mod:`appliance.live` and :mod:`appliance.agent` (the runners).
"""
