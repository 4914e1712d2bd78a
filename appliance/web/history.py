"""The history page's API: past sessions and recordings, their exports and audio, as replies.

No HTTP here, only what to answer (the server checks the token first and
turns a :class:`Reply` into its response); the archive's file and database
reads run on a worker thread, never on the event loop.

Routes (every one needs ``Authorization: Bearer <control token>``)
  GET /api/history                 {"items": [entry, ...], "limit": n}
  GET /api/history/<id>            {"entry": ..., "transcript": <the JSON export>}
  GET /api/history/<id>/<format>   one export as a download (txt, md, srt, vtt, json)
  GET /api/history/<id>/audio      a recording's audio (WAV) while the spool keeps it
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import json
import logging
from typing import Any

from appliance.history.archive import Archive, Entry, NotFound, parse_id
from appliance.spool.ids import InvalidId
from appliance.transcripts import exports

log = logging.getLogger(__name__)

PREFIX = "/api/history"


@dataclasses.dataclass(frozen=True)
class Reply:
    status: http.HTTPStatus
    body: bytes
    content_type: str
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def _json(status: http.HTTPStatus, data: Any) -> Reply:
    return Reply(status, json.dumps(data, default=str).encode(), "application/json")


def _error(status: http.HTTPStatus, message: str) -> Reply:
    return _json(status, {"error": message})


def _entry(e: Entry) -> dict[str, Any]:
    return dataclasses.asdict(e)


class HistoryApi:
    """Answers the history routes from ``archive``."""

    def __init__(self, archive: Archive, *, list_limit: int, audio_max_bytes: int) -> None:
        self.archive = archive
        self.list_limit = list_limit
        self.audio_max_bytes = audio_max_bytes

    async def answer(self, path: str, live: str | None) -> Reply:
        """The reply to ``GET path`` (under :data:`PREFIX`); ``live``: the running session."""
        parts = path.removeprefix(PREFIX).strip("/").split("/")
        try:
            return await asyncio.to_thread(self._answer, parts, live)
        except InvalidId as exc:
            return _error(http.HTTPStatus.BAD_REQUEST, str(exc))
        except NotFound as exc:
            return _error(http.HTTPStatus.NOT_FOUND, str(exc))
        except OSError as exc:
            log.error("history: %s", exc)
            return _error(http.HTTPStatus.INTERNAL_SERVER_ERROR, "history unavailable")

    def _answer(self, parts: list[str], live: str | None) -> Reply:
        if parts == [""]:
            items = self.archive.entries(self.list_limit, live)
            return _json(
                http.HTTPStatus.OK,
                {"items": [_entry(e) for e in items], "limit": self.list_limit},
            )
        item_id = parts[0]
        parse_id(item_id)
        if len(parts) == 1:
            entry = self.archive.entry(item_id, live)
            transcript = self.archive.transcript(item_id, live)
            return _json(
                http.HTTPStatus.OK,
                {
                    "entry": _entry(entry),
                    "transcript": exports.to_data(transcript),
                    "formats": list(exports.FORMATS),
                },
            )
        if len(parts) == 2 and parts[1] == "audio":
            return self._audio(item_id)
        if len(parts) == 2 and parts[1] in exports.FORMATS:
            name, text = self.archive.export(item_id, parts[1])
            return Reply(
                http.HTTPStatus.OK,
                text.encode(),
                exports.MEDIA_TYPES[parts[1]],
                {"Content-Disposition": f'attachment; filename="{name}"'},
            )
        raise NotFound("no such history resource")

    def _audio(self, item_id: str) -> Reply:
        audio = self.archive.audio(item_id)
        if audio.size > self.audio_max_bytes:
            return _error(
                http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the audio is {audio.size} bytes, more than web.history_audio_max_bytes",
            )
        return Reply(http.HTTPStatus.OK, b"".join(audio.chunks), "audio/wav")
