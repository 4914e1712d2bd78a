"""One transcript model for a live session and a field recording, read from what is stored.

A live session is its JSONL file (``live.TranscriptWriter``'s turns, and the
late turns ``late.py`` joins at their offset); a recording is the
pre-recorded API's transcript JSON. Both become a :class:`Transcript` of
utterances in stream time, so every export is made one way. The parsers take
already-decoded data, trust none of it (a missing or odd field is skipped,
never an exception), and do no I/O.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from typing import Literal, TypeGuard

Kind = Literal["session", "recording"]


@dataclasses.dataclass(frozen=True)
class Word:
    text: str
    start_ms: int
    end_ms: int
    confidence: float | None = None
    speaker: str | None = None


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One speaker's stretch of speech (a live turn, or the API's utterance)."""

    text: str
    start_ms: int
    end_ms: int
    speaker: str | None = None
    words: tuple[Word, ...] = ()
    #: Transcribed later from spooled audio (a live session's gap).
    late: bool = False


@dataclasses.dataclass(frozen=True)
class Summary:
    text: str
    action_items: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Transcript:
    kind: Kind
    id: str
    #: Wall-clock time (Unix seconds) the audio started, if known.
    started_at: float | None
    state: str
    utterances: tuple[Utterance, ...]
    summary: Summary | None = None

    @property
    def speakers(self) -> tuple[str, ...]:
        """Every speaker label, in the order each first speaks."""
        seen: dict[str, None] = {}
        for u in self.utterances:
            if u.speaker is not None:
                seen.setdefault(u.speaker)
        return tuple(seen)

    @property
    def text(self) -> str:
        return " ".join(u.text for u in self.utterances if u.text)

    @property
    def duration_ms(self) -> int:
        return max((u.end_ms for u in self.utterances), default=0)


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _label(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _word(item: object, start_key: str, end_key: str, offset_ms: int = 0) -> Word | None:
    if not isinstance(item, Mapping):
        return None
    text, start, end = item.get("text"), item.get(start_key), item.get(end_key)
    if not isinstance(text, str) or not _number(start) or not _number(end):
        return None
    confidence = item.get("confidence")
    return Word(
        text=text,
        start_ms=offset_ms + round(start),
        end_ms=offset_ms + max(round(start), round(end)),
        confidence=float(confidence) if _number(confidence) else None,
        speaker=_label(item.get("speaker")),
    )


def _words(items: object, start_key: str, end_key: str, offset_ms: int = 0) -> tuple[Word, ...]:
    if not isinstance(items, list):
        return ()
    return tuple(w for item in items if (w := _word(item, start_key, end_key, offset_ms)))


def _by_speaker(words: tuple[Word, ...]) -> list[tuple[Word, ...]]:
    """Runs of consecutive words with the same speaker."""
    runs: list[list[Word]] = []
    for w in words:
        if runs and runs[-1][-1].speaker == w.speaker:
            runs[-1].append(w)
        else:
            runs.append([w])
    return [tuple(r) for r in runs]


def _utterance(
    text: object, words: tuple[Word, ...], speaker: str | None, at_ms: int, late: bool = False
) -> list[Utterance]:
    """The utterance(s) of one stored turn. A late turn whose words name more than one
    speaker (the API labelled them) becomes one utterance per speaker's run."""
    if late and len({w.speaker for w in words}) > 1:
        return [
            Utterance(
                " ".join(w.text for w in run),
                run[0].start_ms,
                run[-1].end_ms,
                run[0].speaker,
                run,
                late=True,
            )
            for run in _by_speaker(words)
        ]
    said = text if isinstance(text, str) else " ".join(w.text for w in words)
    if speaker is None and words and len({w.speaker for w in words}) == 1:
        speaker = words[0].speaker
    start = words[0].start_ms if words else at_ms
    end = words[-1].end_ms if words else at_ms
    return [Utterance(said, start, end, speaker, words, late)]


def session_from_lines(
    session_id: str, lines: Iterable[str], state: str, summary: Summary | None = None
) -> Transcript:
    """A live session from its JSONL lines (a torn or foreign line is skipped)."""
    turns: list[Utterance] = []
    started_at: float | None = None
    last_end = 0
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if started_at is None and _number(record.get("session_start_time")):
            started_at = float(record["session_start_time"])
        late = record.get("late") is True
        offset = record.get("offset_ms")
        at_ms = round(offset) if late and _number(offset) else last_end
        words = _words(record.get("words"), "start_ms", "end_ms")
        found = _utterance(record.get("text"), words, _label(record.get("speaker")), at_ms, late)
        turns.extend(u for u in found if u.text or u.words)
        if not late and found:
            last_end = max(last_end, found[-1].end_ms)
    turns.sort(key=lambda u: u.start_ms)  # stable: equal times keep the file's order
    return Transcript("session", session_id, started_at, state, tuple(turns), summary)


def recording_from_api(
    recording_id: str,
    data: Mapping[str, object] | None,
    state: str,
    started_at: float | None = None,
    summary: Summary | None = None,
) -> Transcript:
    """A recording from the pre-recorded API's transcript JSON (None: not transcribed yet).

    With ``speaker_labels`` the API's ``utterances`` are used as they are;
    without, the words make one utterance (the text alone if it has no words).
    """
    utterances: list[Utterance] = []
    if data is not None:
        raw = data.get("utterances")
        if isinstance(raw, list) and raw:
            for item in raw:
                if not isinstance(item, Mapping):
                    continue
                words = _words(item.get("words"), "start", "end")
                start, end = item.get("start"), item.get("end")
                text = item.get("text")
                utterances.append(
                    Utterance(
                        text if isinstance(text, str) else " ".join(w.text for w in words),
                        round(start) if _number(start) else (words[0].start_ms if words else 0),
                        round(end) if _number(end) else (words[-1].end_ms if words else 0),
                        _label(item.get("speaker")),
                        words,
                    )
                )
        else:
            words = _words(data.get("words"), "start", "end")
            text = data.get("text")
            if words or (isinstance(text, str) and text):
                utterances.extend(_utterance(text, words, None, 0))
    return Transcript("recording", recording_id, started_at, state, tuple(utterances), summary)


def summary_from(value: object) -> Summary | None:
    """A stored summary in whatever plain shape it comes: text, an object with a ``text``
    (the summary store's record), or a mapping with ``summary``/``text`` and
    ``action_items`` (strings). Anything else is no summary."""
    if isinstance(value, str):
        return Summary(value) if value.strip() else None
    if isinstance(value, Summary):
        return value
    stored_text = getattr(value, "text", None)
    if not isinstance(value, Mapping) and isinstance(stored_text, str):
        return Summary(stored_text.strip()) if stored_text.strip() else None  # a stored record
    if not isinstance(value, Mapping):
        return None
    text = value.get("summary", value.get("text"))
    items = value.get("action_items")
    actions = (
        tuple(i for i in items if isinstance(i, str) and i.strip())
        if isinstance(items, list | tuple)
        else ()
    )
    if not isinstance(text, str):
        text = ""
    if not text.strip() and not actions:
        return None
    return Summary(text.strip(), actions)
