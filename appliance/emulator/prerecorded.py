"""Pre-recorded transcription REST (``/v2/upload``, ``/v2/transcript``...).

Uploads are streamed to disk (never held in memory) and hashed on the way,
so tests can count submissions per upload and per content.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import wave
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from appliance.emulator import recognizer
from appliance.emulator.auth import REST_AUTH_ERROR, raw_key_ok

if TYPE_CHECKING:
    from appliance.emulator.server import EmulatorApp
    from appliance.emulator.state import TranscriptRecord

SPEECH_MODELS = frozenset({"universal-3-pro", "universal-2", "universal", "slam-1", "nano", "best"})
SENTENCE_GAP_MS = 700
PARAGRAPH_GAP_MS = 2000
DEFAULT_CHARS_PER_CAPTION = 32


def _emu(request: web.Request) -> EmulatorApp:
    from appliance.emulator.server import EMULATOR_KEY

    return request.app[EMULATOR_KEY]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _authorised(request: web.Request) -> bool:
    return raw_key_ok(request, _emu(request).config.api_keys)


async def upload(request: web.Request) -> web.Response:
    emu = _emu(request)
    if not _authorised(request):
        return web.json_response(REST_AUTH_ERROR, status=401)
    if request.content_type.startswith("multipart/"):
        return _error(400, "Upload the file as the raw request body, not multipart/form-data")
    upload_id = str(uuid.uuid4())
    path = emu.data_dir / "uploads" / upload_id
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as f:
        async for block in request.content.iter_chunked(1 << 16):
            f.write(block)
            digest.update(block)
            size += len(block)
    if size == 0:
        path.unlink()
        return _error(400, "Upload body is empty")
    from appliance.emulator.state import UploadRecord

    url = f"{emu.http_url}/v2/upload/files/{upload_id}"
    emu.state.uploads[upload_id] = UploadRecord(upload_id, path, size, digest.hexdigest(), url)
    return web.json_response({"upload_url": url})


def _validate_submit(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Request body must be a JSON object"
    if not isinstance(body.get("audio_url"), str) or not body["audio_url"]:
        return "audio_url is required"
    models = body.get("speech_models")
    if models is None:
        return (
            "speech_models is required: an ordered list such as ['universal-3-pro', 'universal-2']"
        )
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        return "speech_models must be a non-empty list of model names"
    unknown = [m for m in models if m not in SPEECH_MODELS]
    if unknown:
        return f"Invalid speech model: {unknown[0]}"
    for flag in ("speaker_labels", "punctuate", "format_text", "language_detection"):
        if flag in body and not isinstance(body[flag], bool):
            return f"{flag} must be a boolean"
    return None


async def submit(request: web.Request) -> web.Response:
    emu = _emu(request)
    if not _authorised(request):
        return web.json_response(REST_AUTH_ERROR, status=401)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, "Request body must be valid JSON")
    problem = _validate_submit(body)
    if problem:
        return _error(400, problem)
    from appliance.emulator.state import TranscriptRecord

    upload_id = None
    prefix = f"{emu.http_url}/v2/upload/files/"
    if body["audio_url"].startswith(prefix):
        candidate = body["audio_url"][len(prefix) :]
        if candidate in emu.state.uploads:
            upload_id = candidate
            emu.state.submissions_by_upload[upload_id] += 1
            emu.state.submissions_by_hash[emu.state.uploads[upload_id].sha256] += 1
    record = TranscriptRecord(str(uuid.uuid4()), body, time.monotonic(), upload_id)
    emu.state.transcripts[record.id] = record
    return web.json_response(_view(emu, record))


def _base(record: TranscriptRecord, status: str) -> dict[str, Any]:
    body = record.request
    return {
        "id": record.id,
        "status": status,
        "audio_url": body["audio_url"],
        "speech_models": body["speech_models"],
        "speech_model_used": None,
        "language_code": body.get("language_code", "en_us"),
        "speaker_labels": bool(body.get("speaker_labels", False)),
        "punctuate": body.get("punctuate", True),
        "format_text": body.get("format_text", True),
        "text": None,
        "words": None,
        "utterances": None,
        "confidence": None,
        "audio_duration": None,
        "error": None,
    }


def _view(emu: EmulatorApp, record: TranscriptRecord) -> dict[str, Any]:
    if record.result is not None:
        return record.result
    age = time.monotonic() - record.created_at
    queue_s = emu.config.scaled(emu.config.transcript_queue_s)
    if age < queue_s:
        return _base(record, "queued")
    duration = _audio_seconds(emu, record)
    processing_s = emu.config.scaled(
        emu.config.transcript_processing_s + emu.config.transcript_processing_per_audio_s * duration
    )
    if age < queue_s + processing_s:
        return _base(record, "processing")
    record.result = _transcribe(emu, record)
    return record.result


def _audio_seconds(emu: EmulatorApp, record: TranscriptRecord) -> float:
    if record.upload_id is None:
        return 0.0
    try:
        with wave.open(str(emu.state.uploads[record.upload_id].path), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (wave.Error, EOFError, OSError):
        return 0.0


def _read_audio(path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            raise ValueError("only PCM16 WAV is supported by the emulator")
        rate = w.getframerate()
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
    if channels > 1:
        data = data.reshape(-1, channels)[:, 0]
    return data, rate


def _transcribe(emu: EmulatorApp, record: TranscriptRecord) -> dict[str, Any]:
    result = _base(record, "error")
    if record.upload_id is None:
        url = record.request["audio_url"]
        result["error"] = f"Download error to {url}, 404 Client Error: Not Found for url: {url}"
        return result
    upload_path = emu.state.uploads[record.upload_id].path
    try:
        samples, rate = _read_audio(upload_path)
    except (ValueError, wave.Error, EOFError):
        result["error"] = (
            "Transcoding failed. File does not appear to contain audio the emulator can "
            "decode (it accepts PCM16 WAV)."
        )
        return result
    words = recognizer.recognize(samples, rate)
    texts = (
        recognizer.formatted_texts(words)
        if record.request.get("format_text", True)
        else [w.text for w in words]
    )
    speaker = "A" if record.request.get("speaker_labels") else None
    word_objs = [
        {
            "text": text,
            "start": w.start_ms,
            "end": w.end_ms,
            "confidence": w.confidence,
            "speaker": speaker,
        }
        for w, text in zip(words, texts, strict=True)
    ]
    result.update(
        status="completed",
        speech_model_used=record.request["speech_models"][0],
        text=" ".join(texts),
        words=word_objs,
        confidence=recognizer.WORD_CONFIDENCE if words else 0.0,
        audio_duration=round(samples.size / rate),
    )
    if speaker:
        result["utterances"] = [
            dict(_group(group), speaker=speaker) for group in _split(word_objs, PARAGRAPH_GAP_MS)
        ]
    return result


def _split(words: list[dict], gap_ms: int) -> list[list[dict]]:
    groups: list[list[dict]] = []
    for word in words:
        if groups and word["start"] - groups[-1][-1]["end"] < gap_ms:
            groups[-1].append(word)
        else:
            groups.append([word])
    return groups


def _group(words: list[dict]) -> dict[str, Any]:
    return {
        "text": " ".join(w["text"] for w in words),
        "start": words[0]["start"],
        "end": words[-1]["end"],
        "confidence": recognizer.WORD_CONFIDENCE,
        "words": words,
        "speaker": words[0]["speaker"],
    }


def _lookup(
    request: web.Request,
) -> tuple[EmulatorApp, TranscriptRecord | None, web.Response | None]:
    emu = _emu(request)
    if not _authorised(request):
        return emu, None, web.json_response(REST_AUTH_ERROR, status=401)
    record = emu.state.transcripts.get(request.match_info["id"])
    if record is None:
        return emu, None, _error(404, "Transcript not found")
    return emu, record, None


LIST_DEFAULT_LIMIT = 10
LIST_MAX_LIMIT = 200


async def list_transcripts(request: web.Request) -> web.Response:
    """``GET /v2/transcript``: newest first, ``limit`` 1..200, ``before_id`` pages to older ones.

    Each item carries ``audio_url``, which a client needs to find out whether a
    submit whose answer it never got was accepted.
    """
    emu = _emu(request)
    if not _authorised(request):
        return web.json_response(REST_AUTH_ERROR, status=401)
    try:
        limit = int(request.query.get("limit", LIST_DEFAULT_LIMIT))
    except ValueError:
        return _error(400, "limit must be an integer")
    if not 1 <= limit <= LIST_MAX_LIMIT:
        return _error(400, f"limit must be between 1 and {LIST_MAX_LIMIT}")
    records = [r for r in emu.state.transcripts.values() if not r.deleted]
    records.sort(key=lambda r: r.created_at, reverse=True)
    before = request.query.get("before_id")
    if before is not None:
        ids = [r.id for r in records]
        if before not in ids:
            return _error(400, "before_id is not a known transcript id")
        records = records[ids.index(before) + 1 :]
    page = records[:limit]
    base = f"{emu.http_url}/v2/transcript"
    items = []
    for record in page:
        view = _view(emu, record)
        items.append(
            {
                "id": record.id,
                "resource_url": f"{base}/{record.id}",
                "status": view["status"],
                "audio_url": record.request["audio_url"],
                "error": view.get("error"),
            }
        )
    older = len(records) > limit
    details = {
        "limit": limit,
        "result_count": len(items),
        "current_url": str(request.url),
        "prev_url": f"{base}?limit={limit}&before_id={page[-1].id}" if older and page else None,
        "next_url": None,
    }
    return web.json_response({"page_details": details, "transcripts": items})


async def get_transcript(request: web.Request) -> web.Response:
    emu, record, problem = _lookup(request)
    if problem:
        return problem
    assert record is not None
    return web.json_response(_view(emu, record))


async def delete_transcript(request: web.Request) -> web.Response:
    emu, record, problem = _lookup(request)
    if problem:
        return problem
    assert record is not None
    view = _view(emu, record)
    if view["status"] not in ("completed", "error"):
        return _error(400, "Transcript cannot be deleted while it is being processed")
    record.deleted = True
    view = dict(
        view, text="Deleted by user.", words=[], utterances=None, audio_url="http://deleted_by_user"
    )
    record.result = view
    return web.json_response(view)


def _completed(
    request: web.Request,
) -> tuple[dict[str, Any] | None, web.Response | None]:
    emu, record, problem = _lookup(request)
    if problem:
        return None, problem
    assert record is not None
    view = _view(emu, record)
    if view["status"] != "completed":
        return None, _error(400, f"Transcript is not completed (status: {view['status']})")
    return view, None


async def sentences(request: web.Request) -> web.Response:
    view, problem = _completed(request)
    if problem:
        return problem
    assert view is not None
    groups = [_group(g) for g in _split(view["words"] or [], SENTENCE_GAP_MS)]
    return web.json_response(
        {
            "id": view["id"],
            "confidence": view["confidence"],
            "audio_duration": view["audio_duration"],
            "sentences": groups,
        }
    )


async def paragraphs(request: web.Request) -> web.Response:
    view, problem = _completed(request)
    if problem:
        return problem
    assert view is not None
    groups = [_group(g) for g in _split(view["words"] or [], PARAGRAPH_GAP_MS)]
    return web.json_response(
        {
            "id": view["id"],
            "confidence": view["confidence"],
            "audio_duration": view["audio_duration"],
            "paragraphs": groups,
        }
    )


def _timestamp(ms: int, sep: str, hours: bool) -> str:
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    head = f"{h:02d}:{m:02d}" if hours else f"{m + h * 60:02d}"
    return f"{head}:{s:02d}{sep}{ms:03d}"


def captions(words: list[dict], chars_per_caption: int) -> list[tuple[int, int, str]]:
    """Group words into captions of at most ``chars_per_caption`` characters."""
    out: list[tuple[int, int, str]] = []
    current: list[dict] = []
    for word in words:
        text = " ".join(w["text"] for w in [*current, word])
        if current and len(text) > chars_per_caption:
            out.append(
                (current[0]["start"], current[-1]["end"], " ".join(w["text"] for w in current))
            )
            current = []
        current.append(word)
    if current:
        out.append((current[0]["start"], current[-1]["end"], " ".join(w["text"] for w in current)))
    return out


async def subtitles(request: web.Request) -> web.Response:
    fmt = request.match_info["fmt"]
    if fmt not in ("srt", "vtt"):
        return _error(404, "Not found")
    view, problem = _completed(request)
    if problem:
        return problem
    assert view is not None
    raw = request.query.get("chars_per_caption", str(DEFAULT_CHARS_PER_CAPTION))
    try:
        chars = int(raw)
        if chars < 1:
            raise ValueError
    except ValueError:
        return _error(400, "chars_per_caption must be a positive integer")
    cues = captions(view["words"] or [], chars)
    if fmt == "srt":
        blocks = [
            f"{i}\n{_timestamp(a, ',', True)} --> {_timestamp(b, ',', True)}\n{text}\n"
            for i, (a, b, text) in enumerate(cues, 1)
        ]
        body = "\n".join(blocks)
    else:
        blocks = [
            f"{_timestamp(a, '.', False)} --> {_timestamp(b, '.', False)}\n{text}\n"
            for a, b, text in cues
        ]
        body = "WEBVTT\n\n" + "\n".join(blocks)
    return web.Response(text=body, content_type="text/plain")


async def uploaded_file(request: web.Request) -> web.StreamResponse:
    emu = _emu(request)
    record = emu.state.uploads.get(request.match_info["id"])
    if record is None:
        return _error(404, "Not found")
    return web.FileResponse(record.path)


def add_prerecorded_routes(app: web.Application) -> None:
    app.router.add_post("/v2/upload", upload)
    app.router.add_get("/v2/upload/files/{id}", uploaded_file)
    app.router.add_post("/v2/transcript", submit)
    app.router.add_get("/v2/transcript", list_transcripts)
    app.router.add_get("/v2/transcript/{id}", get_transcript)
    app.router.add_delete("/v2/transcript/{id}", delete_transcript)
    app.router.add_get("/v2/transcript/{id}/sentences", sentences)
    app.router.add_get("/v2/transcript/{id}/paragraphs", paragraphs)
    app.router.add_get("/v2/transcript/{id}/{fmt}", subtitles)
