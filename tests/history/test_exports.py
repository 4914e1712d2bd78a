"""The export formats, from the transcript model (pure: no files, no clock)."""

from __future__ import annotations

import itertools
import json

from appliance.transcripts.exports import (
    CaptionLimits,
    clock,
    cues,
    md_escape,
    render,
    to_markdown,
    to_srt,
    to_text,
    to_vtt,
    wrap,
)
from appliance.transcripts.model import (
    Summary,
    Transcript,
    Utterance,
    Word,
    recording_from_api,
    session_from_lines,
    summary_from,
)


def words(text: str, start_ms: int, step_ms: int = 300, speaker: str | None = None) -> tuple:
    return tuple(
        Word(w, start_ms + i * step_ms, start_ms + i * step_ms + 250, 0.9, speaker)
        for i, w in enumerate(text.split())
    )


def utterance(text: str, start_ms: int, speaker: str | None = None, step_ms: int = 300):
    ws = words(text, start_ms, step_ms, speaker)
    return Utterance(text, ws[0].start_ms, ws[-1].end_ms, speaker, ws)


def transcript(*utterances: Utterance, summary: Summary | None = None) -> Transcript:
    return Transcript("session", "ab12", 1_700_000_000.0, "complete", utterances, summary)


TWO_SPEAKERS = transcript(
    utterance("One, two.", 1000, "A"), utterance("Three four five.", 4000, "B")
)


def test_srt_times_have_hours_and_comma_milliseconds():
    assert clock(3_723_004, ",") == "01:02:03,004"
    assert clock(36_000_000 * 10, ",") == "100:00:00,000"  # hours do not wrap


def test_srt_numbers_cues_and_names_each_speaker():
    assert to_srt(TWO_SPEAKERS) == (
        "1\n00:00:01,000 --> 00:00:01,550\nSpeaker A: One, two.\n"
        "\n"
        "2\n00:00:04,000 --> 00:00:04,850\nSpeaker B: Three four five.\n"
    )


def test_vtt_has_a_header_dot_milliseconds_and_voice_spans():
    assert to_vtt(TWO_SPEAKERS) == (
        "WEBVTT\n\n"
        "00:00:01.000 --> 00:00:01.550\n<v Speaker A>One, two.\n\n"
        "00:00:04.000 --> 00:00:04.850\n<v Speaker B>Three four five.\n"
    )


def test_vtt_escapes_markup_in_what_was_said():
    t = transcript(utterance("a <b> & --> c", 0))
    body = to_vtt(t).split("\n", 3)[3]
    assert body == "a &lt;b&gt; &amp; --&gt; c\n"


def test_without_speakers_no_label_is_invented():
    t = transcript(utterance("just words here", 0))
    assert "Speaker" not in to_srt(t) + to_vtt(t) + to_text(t) + to_markdown(t)
    assert to_text(t) == "just words here\n"


def test_wrap_breaks_at_word_boundaries_and_never_splits_a_word():
    assert wrap(["aaa", "bbb", "ccc"], 7) == ["aaa bbb", "ccc"]
    assert wrap(["x" * 12, "y"], 5) == ["x" * 12, "y"]


def test_a_cue_holds_at_most_its_lines_then_a_new_one_starts():
    limits = CaptionLimits(line_chars=10, lines=2, max_cue_ms=60_000)
    t = transcript(utterance("one two three four five six seven", 0))
    found = cues(t, limits)
    assert [c.lines for c in found] == [
        ("one two", "three four"),
        ("five six", "seven"),
    ]
    assert all(len(line) <= 10 for c in found for line in c.lines)
    assert found[1].start_ms == 4 * 300  # the first word of the second cue


def test_the_speaker_name_counts_against_the_line():
    limits = CaptionLimits(line_chars=16, lines=1, max_cue_ms=60_000)
    t = transcript(utterance("aa bb cc", 0, "A"))
    assert [c.lines for c in cues(t, limits)] == [("Speaker A: aa bb",), ("Speaker A: cc",)]


def test_a_long_stretch_is_cut_at_the_cue_length():
    limits = CaptionLimits(line_chars=200, lines=2, max_cue_ms=1000)
    t = transcript(utterance("a b c d e f g", 0, step_ms=400))
    found = cues(t, limits)
    assert all(c.end_ms - c.start_ms <= 1000 for c in found)
    assert " ".join(" ".join(c.lines) for c in found) == "a b c d e f g"


def test_a_speaker_change_always_starts_a_cue():
    t = transcript(utterance("hi", 0, "A"), utterance("yo", 300, "B"))
    assert [c.speaker for c in cues(t)] == ["A", "B"]


def test_cue_times_never_overlap_or_go_backwards():
    late = Utterance("late words", 900, 1500, None, words("late words", 900), late=True)
    t = transcript(utterance("one two three four", 0), late)
    found = cues(t)
    for before, after in itertools.pairwise(found):
        assert after.start_ms >= before.end_ms
    assert all(c.end_ms > c.start_ms for c in found)


def test_markdown_has_facts_summary_action_items_and_timed_speakers():
    t = transcript(
        utterance("One, two.", 1000, "A"),
        utterance("Three.", 65_000, "B"),
        summary=Summary("They counted.", ("Count again",)),
    )
    md = to_markdown(t)
    assert md.startswith("# Session ab12\n\n- Started: 2023-11-14 22:13:20 UTC\n")
    assert "- Speakers: A, B\n" in md
    assert "## Summary\n\nThey counted.\n\n### Action items\n\n- Count again\n" in md
    assert "**[00:00:01] Speaker A:** One, two.\n" in md
    assert "**[00:01:05] Speaker B:** Three.\n" in md
    assert md.index("## Summary") < md.index("## Transcript")


def test_markdown_without_a_summary_has_no_summary_section():
    assert "## Summary" not in to_markdown(TWO_SPEAKERS)


def test_markdown_shows_transcript_text_never_as_markup():
    assert md_escape("*bold* <script> [x](y) # h") == (r"\*bold\* \<script\> \[x\](y) \# h")


def test_text_export_is_one_paragraph_per_speaker_turn():
    assert to_text(TWO_SPEAKERS) == "Speaker A: One, two.\n\nSpeaker B: Three four five.\n"


def test_json_export_round_trips_speakers_words_and_summary():
    t = transcript(utterance("hi there", 0, "A"), summary=Summary("s", ("do",)))
    data = json.loads(render(t, "json"))
    assert data["format"] == "appliance.transcript/1"
    assert data["speakers"] == ["A"]
    assert data["summary"] == {"text": "s", "action_items": ["do"]}
    assert data["utterances"][0]["words"][1] == {
        "text": "there",
        "start_ms": 300,
        "end_ms": 550,
        "confidence": 0.9,
        "speaker": "A",
    }


def test_an_unknown_format_is_refused():
    import pytest

    with pytest.raises(ValueError, match="unknown export format"):
        render(TWO_SPEAKERS, "docx")


# -- the model, from what is stored -----------------------------------------------


def turn_line(order: int, text: str, start_ms: int, speaker: str | None = None) -> str:
    record = {
        "session_id": "ab12",
        "turn_order": order,
        "text": text,
        "words": [
            {"text": w.text, "start_ms": w.start_ms, "end_ms": w.end_ms, "confidence": 0.9}
            for w in words(text, start_ms)
        ],
        "session_start_time": 1_700_000_000.0,
    }
    if speaker:
        record["speaker"] = speaker
    return json.dumps(record)


def test_a_session_reads_turns_with_and_without_speakers_and_skips_torn_lines():
    lines = [turn_line(0, "Hello there.", 0, "A"), "{not json", turn_line(1, "Hi.", 2000)]
    t = session_from_lines("ab12", lines, "complete")
    assert [(u.text, u.speaker) for u in t.utterances] == [("Hello there.", "A"), ("Hi.", None)]
    assert t.started_at == 1_700_000_000.0
    assert t.speakers == ("A",)


def test_a_late_turn_takes_its_place_by_time_and_splits_by_its_speakers():
    late = {
        "session_id": "ab12",
        "late": True,
        "offset_ms": 1000,
        "text": "gap words here",
        "words": [
            {"text": "gap", "start_ms": 1000, "end_ms": 1200, "speaker": "A"},
            {"text": "words", "start_ms": 1300, "end_ms": 1500, "speaker": "B"},
            {"text": "here", "start_ms": 1600, "end_ms": 1800, "speaker": "B"},
        ],
    }
    lines = [turn_line(0, "first", 0), turn_line(1, "last", 5000), json.dumps(late)]
    t = session_from_lines("ab12", lines, "complete")
    assert [(u.text, u.speaker, u.late) for u in t.utterances] == [
        ("first", None, False),
        ("gap", "A", True),
        ("words here", "B", True),
        ("last", None, False),
    ]


def test_a_recording_uses_the_apis_utterances_when_speakers_were_asked_for():
    data = {
        "text": "Hi. Yes.",
        "words": [],
        "utterances": [
            {
                "speaker": "A",
                "text": "Hi.",
                "start": 100,
                "end": 400,
                "words": [{"text": "Hi.", "start": 100, "end": 400, "speaker": "A"}],
            },
            {"speaker": "B", "text": "Yes.", "start": 900, "end": 1200, "words": []},
        ],
    }
    t = recording_from_api("20240101T000000Z-0000abcd", data, "completed")
    assert [(u.speaker, u.text, u.start_ms, u.end_ms) for u in t.utterances] == [
        ("A", "Hi.", 100, 400),
        ("B", "Yes.", 900, 1200),
    ]


def test_a_recording_without_utterances_is_one_stretch_of_its_words():
    data = {
        "text": "a b",
        "words": [{"text": "a", "start": 0, "end": 100}, {"text": "b", "start": 200, "end": 300}],
    }
    t = recording_from_api("20240101T000000Z-0000abcd", data, "completed")
    assert [(u.text, u.start_ms, u.end_ms, u.speaker) for u in t.utterances] == [
        ("a b", 0, 300, None)
    ]
    assert recording_from_api("20240101T000000Z-0000abcd", None, "ready").utterances == ()


def test_odd_fields_in_stored_data_are_skipped_not_raised():
    data = {
        "utterances": [
            None,
            {"speaker": 3, "text": None, "words": [{"text": "x", "start": "soon", "end": 1}]},
        ]
    }
    t = recording_from_api("20240101T000000Z-0000abcd", data, "completed")
    assert [(u.speaker, u.text, u.words) for u in t.utterances] == [(None, "", ())]


def test_a_summary_is_read_from_any_plain_shape_and_nonsense_is_none():
    class Stored:
        text = "From the store."

    assert summary_from(Stored()) == Summary("From the store.")
    assert summary_from({"summary": "S", "action_items": ["a", 3, ""]}) == Summary("S", ("a",))
    assert summary_from("  ") is None
    assert summary_from(42) is None
