"""The I/O half of the connection layer shared by live transcription and the agent.

Its rules are sans-I/O and live in :mod:`appliance.protocol` (pacer, retry,
policy, failures, messages). Here is what touches the network:

* :mod:`~appliance.connection.websocket`: one way to open a session socket and
  one classifier of what went wrong;
* :mod:`~appliance.connection.tokens`: one token coordinator per product,
  single flight, shared by prefetch and connect.
"""
