"""The emulator's "speech recogniser": DTMF digits become spoken words.

One recogniser serves streaming turns, voice-agent user transcripts and
pre-recorded transcripts, so all three agree on what a clip "says". Audio
without DTMF (speech, noise, silence) yields no words, never invented ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from appliance import dtmf

DIGIT_WORDS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "*": "star",
    "#": "pound",
    "A": "a",
    "B": "b",
    "C": "c",
    "D": "d",
}
WORD_DIGITS = {w: d for d, w in DIGIT_WORDS.items()}
WORD_CONFIDENCE = 0.98


@dataclass(frozen=True)
class Word:
    text: str
    start_ms: int
    end_ms: int
    digit: str
    confidence: float = WORD_CONFIDENCE


def word_for(event: dtmf.DigitEvent, offset_s: float = 0.0) -> Word:
    return Word(
        text=DIGIT_WORDS[event.digit],
        start_ms=round((event.start_s + offset_s) * 1000),
        end_ms=round((event.end_s + offset_s) * 1000),
        digit=event.digit,
    )


def transcript_of(words: list[Word]) -> str:
    """Unformatted text: lower-case words separated by spaces."""
    return " ".join(w.text for w in words)


def formatted_texts(words: list[Word], keyterms: Sequence[str] = ()) -> list[str]:
    """Formatted word texts: capitalised first word, full stop on the last.

    A word that is one of ``keyterms`` (ignoring case) is spelled as the key
    term, so a test sees a key-term prompt, or its update, take effect.
    """
    spelling = {term.lower(): term for term in keyterms}
    texts = [spelling.get(w.text.lower(), w.text) for w in words]
    if texts:
        texts[0] = texts[0][:1].upper() + texts[0][1:]
        texts[-1] = texts[-1] + "."
    return texts


def digits_of(text: str) -> str:
    """The digit string a transcript stands for (words or DTMF characters)."""
    out = []
    for token in text.replace(".", " ").replace(",", " ").split():
        token = token.lower()
        if token in WORD_DIGITS:
            out.append(WORD_DIGITS[token])
    return "".join(out)


def recognize(samples: np.ndarray, rate: int) -> list[Word]:
    """Words in a whole clip (mono int16; stereo uses the first channel)."""
    return [word_for(e) for e in dtmf.decode(samples, rate)]


@dataclass(frozen=True)
class SpeechStarted:
    timestamp_ms: int


@dataclass(frozen=True)
class TurnUpdate:
    """The words of the current turn so far; ``final`` when the turn has ended."""

    words: tuple[Word, ...]
    final: bool


class TurnDetector:
    """Sans-I/O streaming turn logic: feed samples, get speech/turn events.

    A turn starts when a tone starts, grows by one word per completed digit
    and ends after ``end_silence_ms`` of audio without a tone (measured on
    the audio clock), on ``force_endpoint()`` or at ``finish()``.
    """

    def __init__(self, rate: int, end_silence_ms: int) -> None:
        self.rate = rate
        self.end_silence_ms = end_silence_ms
        self._decoder = dtmf.DtmfDecoder(rate)
        self._words: list[Word] = []
        self._in_turn = False
        self._last_end_ms = 0

    @property
    def audio_ms(self) -> int:
        return round(self._decoder.samples_seen * 1000 / self.rate)

    @property
    def in_turn(self) -> bool:
        return self._in_turn

    def feed(self, samples: np.ndarray) -> list[SpeechStarted | TurnUpdate]:
        out: list[SpeechStarted | TurnUpdate] = []
        events = self._decoder.feed(samples)
        for event in events:
            if not self._in_turn:
                self._start(event.start_s, out)
            word = word_for(event)
            self._words.append(word)
            self._last_end_ms = word.end_ms
            out.append(TurnUpdate(tuple(self._words), final=False))
        if self._decoder.active_digit is not None and not self._in_turn:
            self._start(self._decoder.samples_seen / self.rate - 0.05, out)
        if (
            self._in_turn
            and self._words
            and self._decoder.active_digit is None
            and self.audio_ms - self._last_end_ms >= self.end_silence_ms
        ):
            out += self._end()
        return out

    def force_endpoint(self) -> list[SpeechStarted | TurnUpdate]:
        return self._end() if self._words else []

    def finish(self) -> list[SpeechStarted | TurnUpdate]:
        out: list[SpeechStarted | TurnUpdate] = []
        for event in self._decoder.flush():
            if not self._in_turn:
                self._start(event.start_s, out)
            self._words.append(word_for(event))
        if self._words:
            out += self._end()
        return out

    def _start(self, start_s: float, out: list[SpeechStarted | TurnUpdate]) -> None:
        self._in_turn = True
        out.append(SpeechStarted(max(0, round(start_s * 1000))))

    def _end(self) -> list[SpeechStarted | TurnUpdate]:
        words = tuple(self._words)
        self._words = []
        self._in_turn = False
        return [TurnUpdate(words, final=True)]
