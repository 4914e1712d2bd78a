"""The device's own controls: the button (and its keyboard stand-in), the state LED, earcons.

Each is optional and constructed only when configured, so the daemon runs on
a desktop without GPIO. All of them talk to the rest of the daemon through
the asyncio loop: gestures come out as :class:`appliance.controller.Gesture`,
the LED follows state events (``appliance.events.StateChanged``), earcons explicit calls.
"""

from appliance.controls.button import ButtonGestures, GestureRecognizer, keyboard_gesture
from appliance.controls.earcons import EARCON_NAMES, EarconPlayer, render_earcon
from appliance.controls.leds import LedPattern, StateLed, pattern_for

__all__ = [
    "EARCON_NAMES",
    "ButtonGestures",
    "EarconPlayer",
    "GestureRecognizer",
    "LedPattern",
    "StateLed",
    "keyboard_gesture",
    "pattern_for",
    "render_earcon",
]
