"""The files a transcript is exported as: plain text, Markdown, SRT, WebVTT and JSON.

Pure functions from a :class:`~appliance.transcripts.model.Transcript` to text,
so the command line, the history page and the tests make the same bytes.
Subtitles are cut from word times: a cue ends where the speaker changes, where
another word would need more than ``lines`` lines of ``line_chars``
characters, or where it would last longer than ``max_cue_ms``. Cue times never
go backwards and never overlap (a late turn that starts inside the one before
starts where it ends).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any

from appliance.transcripts.model import Transcript, Utterance, Word

#: The export formats, by file suffix, with the media type each is served as.
MEDIA_TYPES: dict[str, str] = {
    "txt": "text/plain; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "json": "application/json",
}
FORMATS: tuple[str, ...] = tuple(MEDIA_TYPES)
#: What the JSON export says it is, so a reader can tell a later shape apart.
JSON_FORMAT = "appliance.transcript/1"


@dataclasses.dataclass(frozen=True)
class CaptionLimits:
    """How much text one subtitle cue holds (the usual broadcast limits by default)."""

    line_chars: int = 42
    lines: int = 2
    max_cue_ms: int = 7000


DEFAULT_CAPTION_LIMITS = CaptionLimits()


@dataclasses.dataclass(frozen=True)
class Cue:
    start_ms: int
    end_ms: int
    lines: tuple[str, ...]
    speaker: str | None = None


def speaker_name(label: str) -> str:
    """``A`` -> ``Speaker A`` (the APIs' letters); a longer label is a name already."""
    return f"Speaker {label}" if len(label) <= 2 else label


def clock(ms: int, fraction_sep: str | None = None) -> str:
    """``HH:MM:SS`` (and ``,mmm`` / ``.mmm`` with a separator); hours do not wrap."""
    ms = max(0, ms)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    out = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return out if fraction_sep is None else f"{out}{fraction_sep}{millis:03d}"


def wrap(words: list[str], line_chars: int) -> list[str]:
    """Words into lines of at most ``line_chars`` (a longer word has a line of its own)."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= line_chars:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _timed_words(u: Utterance) -> list[Word]:
    """The utterance's words; one without word times shares its own times among its text."""
    if u.words:
        return list(u.words)
    return [Word(t, u.start_ms, u.end_ms) for t in u.text.split()]


def cues(
    transcript: Transcript,
    limits: CaptionLimits = DEFAULT_CAPTION_LIMITS,
    *,
    name_in_text: bool = True,
) -> list[Cue]:
    """The subtitle cues of ``transcript``, in time order; with ``name_in_text`` each
    labelled cue starts with ``Speaker A:`` (and the name counts against the line)."""
    out: list[Cue] = []

    def flush(words: list[Word], speaker: str | None) -> None:
        if not words:
            return
        start = max(words[0].start_ms, out[-1].end_ms if out else 0)
        end = max(words[-1].end_ms, start + 1)
        out.append(Cue(start, end, tuple(_lines(words, speaker)), speaker))

    def _lines(words: list[Word], speaker: str | None) -> list[str]:
        prefix = [f"{speaker_name(speaker)}:"] if speaker and name_in_text else []
        return wrap(prefix + [w.text for w in words], limits.line_chars)

    for u in transcript.utterances:
        current: list[Word] = []
        for word in _timed_words(u):
            if current and (
                len(_lines([*current, word], u.speaker)) > limits.lines
                or word.end_ms - current[0].start_ms > limits.max_cue_ms
            ):
                flush(current, u.speaker)
                current = []
            current.append(word)
        flush(current, u.speaker)
    return out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def to_srt(transcript: Transcript, limits: CaptionLimits = DEFAULT_CAPTION_LIMITS) -> str:
    """SubRip: numbered cues, ``HH:MM:SS,mmm``, a blank line after each."""
    blocks = [
        f"{i}\n{clock(c.start_ms, ',')} --> {clock(c.end_ms, ',')}\n"
        + "\n".join(_one_line(line) for line in c.lines)
        + "\n"
        for i, c in enumerate(cues(transcript, limits), 1)
    ]
    return "\n".join(blocks)


_VTT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _vtt_text(text: str) -> str:
    # "-->" can never appear in cue text; escaping ">" already breaks it up.
    return re.sub(r"[&<>]", lambda m: _VTT_ESCAPES[m.group()], _one_line(text))


def to_vtt(transcript: Transcript, limits: CaptionLimits = DEFAULT_CAPTION_LIMITS) -> str:
    """WebVTT: ``HH:MM:SS.mmm``; a speaker is a voice span (``<v Speaker A>``), not text."""
    blocks = ["WEBVTT\n"]
    for c in cues(transcript, limits, name_in_text=False):
        text = "\n".join(_vtt_text(line) for line in c.lines)
        if c.speaker:
            text = f"<v {_vtt_text(speaker_name(c.speaker))}>{text}"
        blocks.append(f"{clock(c.start_ms, '.')} --> {clock(c.end_ms, '.')}\n{text}\n")
    return "\n".join(blocks)


def to_text(transcript: Transcript) -> str:
    """Plain text: one paragraph per utterance, ``Speaker A:`` before it when labelled."""
    paragraphs = [
        f"{speaker_name(u.speaker)}: {_one_line(u.text)}" if u.speaker else _one_line(u.text)
        for u in transcript.utterances
        if u.text.strip()
    ]
    return "\n\n".join(paragraphs) + ("\n" if paragraphs else "")


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def md_escape(text: str) -> str:
    """Transcript text as Markdown shows it, never as markup or HTML."""
    return _MD_SPECIAL.sub(r"\\\1", _one_line(text))


def _utc(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def to_markdown(transcript: Transcript) -> str:
    """A readable document: facts, the summary and action items if stored, then each
    utterance with its time and speaker."""
    title = "Session" if transcript.kind == "session" else "Recording"
    out = [f"# {title} {transcript.id}", ""]
    if transcript.started_at is not None:
        out.append(f"- Started: {_utc(transcript.started_at)}")
    out.append(f"- Length: {clock(transcript.duration_ms)}")
    out.append(f"- State: {md_escape(transcript.state)}")
    if transcript.speakers:
        out.append(f"- Speakers: {', '.join(md_escape(s) for s in transcript.speakers)}")
    out.append("")
    summary = transcript.summary
    if summary is not None:
        out += ["## Summary", ""]
        if summary.text:
            out += [summary.text.strip(), ""]
        if summary.action_items:
            out += ["### Action items", ""]
            out += [f"- {md_escape(item)}" for item in summary.action_items]
            out.append("")
    out += ["## Transcript", ""]
    said = [u for u in transcript.utterances if u.text.strip()]
    for u in said:
        who = f" {md_escape(speaker_name(u.speaker))}:" if u.speaker else ""
        late = " *(transcribed later)*" if u.late else ""
        out += [f"**[{clock(u.start_ms)}]{who}** {md_escape(u.text)}{late}", ""]
    if not said:
        out += ["*Nothing was transcribed.*", ""]
    return "\n".join(out)


def to_data(transcript: Transcript) -> dict[str, Any]:
    """The JSON export as a value (the page's detail view uses it too)."""
    summary = transcript.summary
    return {
        "format": JSON_FORMAT,
        "kind": transcript.kind,
        "id": transcript.id,
        "started_at": transcript.started_at,
        "state": transcript.state,
        "duration_ms": transcript.duration_ms,
        "speakers": list(transcript.speakers),
        "summary": None
        if summary is None
        else {"text": summary.text, "action_items": list(summary.action_items)},
        "text": transcript.text,
        "utterances": [
            {
                "speaker": u.speaker,
                "start_ms": u.start_ms,
                "end_ms": u.end_ms,
                "text": u.text,
                "late": u.late,
                "words": [dataclasses.asdict(w) for w in u.words],
            }
            for u in transcript.utterances
        ],
    }


def to_json(transcript: Transcript) -> str:
    return json.dumps(to_data(transcript), ensure_ascii=False, indent=1) + "\n"


def render(transcript: Transcript, fmt: str, limits: CaptionLimits = DEFAULT_CAPTION_LIMITS) -> str:
    """``transcript`` in export format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "txt":
        return to_text(transcript)
    if fmt == "md":
        return to_markdown(transcript)
    if fmt == "srt":
        return to_srt(transcript, limits)
    if fmt == "vtt":
        return to_vtt(transcript, limits)
    if fmt == "json":
        return to_json(transcript)
    raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
