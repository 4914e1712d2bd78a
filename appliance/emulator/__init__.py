"""A strict local emulator of the AssemblyAI APIs (streaming v3, voice agent, pre-recorded).

It is an independent reading of the public documentation: it imports nothing
from ``appliance.cloud`` (and the daemon never imports it), so a
misunderstanding on one side is caught by the other.
"""

from appliance.emulator.config import DEMO_API_KEY, AgentScript, EmulatorConfig
from appliance.emulator.control import Controls
from appliance.emulator.server import Emulator, EmulatorThread
from appliance.emulator.state import EmulatorState, SessionRecord

__all__ = [
    "DEMO_API_KEY",
    "AgentScript",
    "Controls",
    "Emulator",
    "EmulatorConfig",
    "EmulatorState",
    "EmulatorThread",
    "SessionRecord",
]
