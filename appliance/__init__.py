"""Raspberry Pi voice appliance on AssemblyAI's APIs.

The embeddable API (the README's "Embedding" section): :class:`LiveTranscriber`
over an audio source, with :class:`LiveOptions` and a token source. Names are
imported on first use, so ``import appliance`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "LiveTranscriber": "appliance.live",
    "LiveOptions": "appliance.live",
    "TranscriptWriter": "appliance.live",
    "Turn": "appliance.protocol.streaming",
    "Account": "appliance.protocol.account",
    "SessionAccount": "appliance.protocol.streaming",
    "LiveConfig": "appliance.config",
    "ReconnectConfig": "appliance.config",
    "EndpointsConfig": "appliance.config",
    "MintedTokens": "appliance.cloud.tokens",
    "Secret": "appliance.secrets",
    "RingBuffer": "appliance.audio.ring",
    "AudioCapture": "appliance.audio.capture",
    "FileSource": "appliance.audio.sources",
    "EventBus": "appliance.events",
}

__all__ = [
    "Account",
    "AudioCapture",
    "EndpointsConfig",
    "EventBus",
    "FileSource",
    "LiveConfig",
    "LiveOptions",
    "LiveTranscriber",
    "MintedTokens",
    "ReconnectConfig",
    "RingBuffer",
    "Secret",
    "SessionAccount",
    "TranscriptWriter",
    "Turn",
    "__version__",
]

if TYPE_CHECKING:
    from appliance.audio.capture import AudioCapture
    from appliance.audio.ring import RingBuffer
    from appliance.audio.sources import FileSource
    from appliance.cloud.tokens import MintedTokens
    from appliance.config import EndpointsConfig, LiveConfig, ReconnectConfig
    from appliance.events import EventBus
    from appliance.live import LiveOptions, LiveTranscriber, TranscriptWriter
    from appliance.protocol.account import Account
    from appliance.protocol.streaming import SessionAccount, Turn
    from appliance.secrets import Secret


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'appliance' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
