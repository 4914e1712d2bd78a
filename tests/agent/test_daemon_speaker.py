"""``appliance run`` keeps its speaker through an agent conversation on the users' sound stacks.

On PulseAudio with default null-sink arguments a new speaker stream pauses
1-2 s after its first callbacks; taken for a dead device, it was reopened
every ~2 s and no reply was ever heard (issue 16).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.emulator import EmulatorConfig, EmulatorThread
from tests.agent.daemon_run import converse
from tests.fixtures.emulator import make_test_config
from tests.fixtures.pulse import PIPEWIRE_ALSA, PULSE, SoundServer, stack_params

pytestmark = [pytest.mark.audio, stack_params(PULSE, PIPEWIRE_ALSA)]

CONVERSATION_SECONDS = 6.0


@pytest.fixture
def emulator_config(tmp_path: Path) -> EmulatorConfig:
    """Server-side durations in real time: the conversation is real time too."""
    return make_test_config(tmp_path, time_scale=1.0)


def test_agent_conversation_plays_every_reply_and_never_loses_the_speaker(
    pulse_server: SoundServer, emulator: EmulatorThread, tmp_path: Path
) -> None:
    result = converse(
        pulse_server, emulator.http_url, emulator.api_key, tmp_path, CONVERSATION_SECONDS
    )
    lost = [line for line in result.log.splitlines() if "playback lost" in line]
    assert lost == [], result.log
    assert len(result.said) >= 2
    assert result.heard == "".join(result.said), result.log  # each reply echoes its turn
    assert result.returncode == 0, result.log
