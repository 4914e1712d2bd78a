"""Who is closed so that PortAudio can rescan for a missing device (no audio stack needed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.audio import stream as stream_module
from appliance.audio.stream import StreamState, SupervisedStream, reinitialise_portaudio


class FakeStream(SupervisedStream):
    """A stream whose PortAudio side is a note of what was done to it."""

    def __init__(self, kind: str, *, yields: bool, holds_portaudio: bool = True) -> None:
        super().__init__(10, None, None, 0.1, 1.0)
        self.kind = kind
        self.yields_to_rescan = yields
        self.done: list[str] = []
        self._pa = object() if holds_portaudio else None  # type: ignore[assignment]

    def _close_locked(self) -> None:
        self.done.append("closed")
        self._pa = None

    def _on_lost(self) -> None:
        self.done.append("told")

    def _open(self, first: bool) -> None:
        self.done.append("opened")
        self._pa = object()  # type: ignore[assignment]


@pytest.fixture
def registered() -> Iterator[list[FakeStream]]:
    streams: list[FakeStream] = []
    yield streams
    for s in streams:
        stream_module._OPEN_STREAMS.discard(s)


def register(streams: list[FakeStream], *new: FakeStream) -> None:
    for s in new:
        streams.append(s)
        stream_module._OPEN_STREAMS.add(s)


def test_a_missing_microphone_has_the_speaker_closed_told_and_reopened(registered):
    mic = FakeStream("capture", yields=False, holds_portaudio=False)
    speaker = FakeStream("playback", yields=True)
    register(registered, mic, speaker)
    assert reinitialise_portaudio(mic) == 1
    assert speaker.done == ["closed", "told", "opened"]
    assert speaker.reinitialised == 1 and speaker.state == StreamState.STARTING
    assert mic.done == []


def test_a_missing_speaker_never_closes_the_microphone(registered):
    mic = FakeStream("capture", yields=False)
    speaker = FakeStream("playback", yields=True, holds_portaudio=False)
    register(registered, mic, speaker)
    assert reinitialise_portaudio(speaker) == 0
    assert mic.done == [] and mic.reinitialised == 0


def test_with_nobody_else_holding_portaudio_there_is_nothing_to_close(registered):
    mic = FakeStream("capture", yields=False, holds_portaudio=False)
    closed_speaker = FakeStream("playback", yields=True, holds_portaudio=False)
    register(registered, mic, closed_speaker)
    assert reinitialise_portaudio(mic) == 0
    assert closed_speaker.done == []


def test_a_stream_that_cannot_reopen_after_the_rescan_is_lost_and_left_to_its_supervisor(
    registered,
):
    class Failing(FakeStream):
        def _open(self, first: bool) -> None:
            self.done.append("open failed")
            raise OSError("no such device")

    mic = FakeStream("capture", yields=False, holds_portaudio=False)
    speaker = Failing("playback", yields=True)
    register(registered, mic, speaker)
    assert reinitialise_portaudio(mic) == 1
    assert speaker.done == ["closed", "told", "open failed", "closed"]
    assert speaker.state == StreamState.LOST and "no such device" in speaker.state_detail
