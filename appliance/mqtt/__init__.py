"""MQTT and Home Assistant: the device's state, turns and controls on the owner's broker.

``topics`` names the topics, ``mapper`` turns typed events into messages,
``discovery`` writes Home Assistant's config messages, ``commands`` validates
what arrives on ``<base>/cmd/...``; all four are pure. ``bridge`` is the thin
I/O layer over ``aiomqtt`` (the ``mqtt`` extra), run on the daemon's event
loop and never on the capture path.
"""
