"""The server accepts a submit but answers with something unusable: reconcile like a lost
answer (the transcript is found in the list and adopted), never pay for it twice.

The emulator really creates the transcript; a transport between it and the client
rewrites the answer, as a proxy or a server bug would."""

from __future__ import annotations

import httpx
import pytest

from appliance.spool import store as st
from appliance.spool.uploader import Uploader

from .helpers import client_for, make_spool, record_digits, upload_config


class Rewrite(httpx.AsyncBaseTransport):
    """Passes requests to the emulator; replaces the answers to the matching ones."""

    def __init__(self, body: bytes, method: str, path: str, count: int | None = 1) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.body, self.method, self.path = body, method, path
        self.count = count  # None: every matching answer
        self.rewritten = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        wanted = self.count is None or self.rewritten < self.count
        if wanted and (request.method, request.url.path) == (self.method, self.path):
            await response.aread()
            self.rewritten += 1
            return httpx.Response(
                200, content=self.body, headers={"content-type": "application/json"}
            )
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def fast(spool, client) -> Uploader:
    return Uploader(spool, client, upload_config(), retry_base=0.05, retry_cap=0.2)


# Answers to an accepted POST /v2/transcript that carry no usable transcript id.
UNUSABLE_ANSWERS = [
    pytest.param(b'{"id": "../../etc/passwd", "status": "queued"}', id="id escapes a path"),
    pytest.param(b'{"id": 42, "status": "queued"}', id="id not a string"),
    pytest.param(b'{"status": "queued"}', id="no id"),
    pytest.param(b'{"id": ""}', id="empty id"),
    pytest.param(b"<html>gateway</html>", id="not JSON"),
    pytest.param(b'["not", "an", "object"]', id="not an object"),
]


@pytest.mark.parametrize("answer", UNUSABLE_ANSWERS)
async def test_unusable_submit_answer_is_reconciled_and_submitted_once(tmp_path, emulator, answer):
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "2 7")
    transport = Rewrite(answer, "POST", "/v2/transcript")
    async with client_for(emulator, transport=transport) as client:
        await fast(spool, client).drain(timeout=30)
    assert transport.rewritten == 1
    row = spool.get(rid)
    assert row.state == st.COMPLETED, row.last_error
    assert emulator.state.submissions_for_upload(row.upload_url) == 1
    assert row.transcript_id in emulator.state.transcripts  # the one the server made


async def test_transcript_the_list_cannot_name_is_never_submitted_again(tmp_path, emulator):
    """The list shows our transcript only under an unusable id: the recording fails, and
    ``spool retry`` reconciles again instead of submitting (and paying) once more."""
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "5 5")
    upload_url = None

    def list_with_bad_id() -> bytes:
        return (
            b'{"transcripts": [{"id": "bad id!", "audio_url": "' + upload_url.encode() + b'"}],'
            b' "page_details": {"prev_url": null}}'
        )

    # First round: the submit answer is unusable and so is every list answer.
    submit_garbled = Rewrite(b'{"id": null}', "POST", "/v2/transcript")
    async with client_for(emulator, transport=submit_garbled) as client:
        uploader = fast(spool, client)
        await uploader._step(spool.get(rid))  # upload
        upload_url = spool.get(rid).upload_url
        await uploader._step(spool.get(rid))  # submit: accepted, answer unusable
    assert spool.get(rid).state == st.SUBMITTING
    list_garbled = Rewrite(list_with_bad_id(), "GET", "/v2/transcript", count=None)
    async with client_for(emulator, transport=list_garbled) as client:
        await fast(spool, client)._step(spool.get(rid))  # reconcile: only an unusable id
    row = spool.get(rid)
    assert row.state == st.FAILED and "unusable transcript id" in row.last_error
    assert emulator.state.submissions_for_upload(upload_url) == 1

    # A person retries once the server answers sensibly again: reconciled, adopted.
    assert spool.retry(rid) and spool.get(rid).state == st.SUBMITTING
    async with client_for(emulator) as client:
        await fast(spool, client).drain(timeout=30)
    row = spool.get(rid)
    assert row.state == st.COMPLETED, row.last_error
    assert emulator.state.submissions_for_upload(upload_url) == 1


async def test_retry_after_a_refused_submit_submits_again(tmp_path, emulator):
    """A submit the server refused (401) is safe to send again: retry reconciles (the
    list shows nothing) and submits once."""
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "3")
    async with client_for(emulator) as client:
        uploader = fast(spool, client)
        await uploader._step(spool.get(rid))  # upload
        emulator.fail_http(401, count=1, path_prefix="/v2/transcript")
        await uploader._step(spool.get(rid))
    row = spool.get(rid)
    assert row.state == st.FAILED and row.upload_url
    assert emulator.state.submissions_for_upload(row.upload_url) == 0
    assert spool.retry(rid)
    async with client_for(emulator) as client:
        await fast(spool, client).drain(timeout=30)
    assert spool.get(rid).state == st.COMPLETED
    assert emulator.state.submissions_for_upload(row.upload_url) == 1


async def test_reconcile_skips_an_unusable_id_for_a_usable_one(tmp_path, emulator):
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "6 1")
    async with client_for(emulator, transport=Rewrite(b"{}", "POST", "/v2/transcript")) as client:
        uploader = fast(spool, client)
        await uploader._step(spool.get(rid))  # upload
        await uploader._step(spool.get(rid))  # submit: accepted, answer unusable
    row = spool.get(rid)
    (real,) = emulator.state.transcripts
    listing = (
        b'{"transcripts": [{"id": "bad id!", "audio_url": "%s"}, {"id": "%s", "audio_url": '
        b'"%s"}], "page_details": {"prev_url": null}}'
        % (row.upload_url.encode(), real.encode(), row.upload_url.encode())
    )
    async with client_for(emulator, transport=Rewrite(listing, "GET", "/v2/transcript")) as client:
        await fast(spool, client)._step(spool.get(rid))
    row = spool.get(rid)
    assert row.state == st.SUBMITTED and row.transcript_id == real
    assert emulator.state.submissions_for_upload(row.upload_url) == 1
