"""The uploader against the emulator: happy path, faults, reconciliation, no hot loops."""

from __future__ import annotations

import json

import pytest

from appliance.events import EventBus, UploadProgress
from appliance.protocol.retry import RetryLimits
from appliance.spool import store as st
from appliance.spool.uploader import Uploader
from tests.events import collect

from .helpers import api_requests, client_for, make_spool, record_digits, upload_config


def fast_uploader(spool, client, **kw) -> Uploader:
    cfg = upload_config(**kw.pop("cfg", {}))
    kw.setdefault("retry_base", 0.05)
    kw.setdefault("retry_cap", 0.5)
    kw.setdefault("probe_base", 0.05)
    kw.setdefault("probe_cap", 0.4)
    return Uploader(spool, client, cfg, **kw)


async def test_recording_reaches_completed_with_transcript_files(tmp_path, emulator):
    bus = EventBus()
    seen = collect(bus, UploadProgress)
    spool = make_spool(tmp_path)
    spool.events = bus
    rid = record_digits(spool, "1 2 3")
    async with client_for(emulator) as client:
        await fast_uploader(spool, client).drain(timeout=30)
    row = spool.get(rid)
    assert row.state == st.COMPLETED, row.last_error
    data = json.loads(spool.artifact_path(rid, "json").read_text())
    assert data["text"] == "One two three."
    assert spool.artifact_path(rid, "srt").read_text().startswith("1\n")
    assert spool.artifact_path(rid, "vtt").read_text().startswith("WEBVTT")
    assert emulator.state.submissions_for_upload(row.upload_url) == 1
    assert seen and seen[-1].sent == seen[-1].total


async def test_submit_body_has_fallback_models_and_options(tmp_path, emulator):
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "4")
    cfg = {"speaker_labels": True, "keyterms_prompt": ["Pi"], "extra": {"punctuate": False}}
    async with client_for(emulator) as client:
        await fast_uploader(spool, client, cfg=cfg).drain(timeout=30)
    row = spool.get(rid)
    request = next(iter(emulator.state.transcripts.values())).request
    assert request["speech_models"] == ["universal-3-pro", "universal-2"]
    assert request["speaker_labels"] is True and request["keyterms_prompt"] == ["Pi"]
    assert request["punctuate"] is False and request["audio_url"] == row.upload_url


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_http_faults_end_in_success_without_a_hot_loop(tmp_path, emulator, status):
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "5 6")
    emulator.fail_http(status=status, count=4, retry_after=0 if status == 429 else None)
    async with client_for(emulator) as client:
        await fast_uploader(spool, client).drain(timeout=30)
    row = spool.get(rid)
    assert row.state == st.COMPLETED, row.last_error
    assert emulator.state.counters[f"http_{status}_injected"] == 4
    assert max(emulator.state.submissions_by_hash.values()) == 1
    # 4 faults plus a handful of real calls (upload, submit, polls, 2 exports), nothing more.
    assert api_requests(emulator) < 40


async def test_retry_after_is_honoured(tmp_path, emulator):
    import time

    spool = make_spool(tmp_path)
    record_digits(spool, "7")
    emulator.fail_http(status=429, count=1, retry_after=1, path_prefix="/v2/upload")
    async with client_for(emulator) as client:
        t0 = time.monotonic()
        await fast_uploader(spool, client).drain(timeout=30)
    uploads = [p for _m, p, _s in emulator.state.http_requests if p == "/v2/upload"]
    assert uploads == ["/v2/upload", "/v2/upload"]
    assert time.monotonic() - t0 >= 1.0  # the second upload waited the server's Retry-After


async def test_network_down_waits_quietly_and_resumes(tmp_path, emulator, caplog):
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "8 9")
    emulator.network_down(2.0)
    async with client_for(emulator) as client:
        uploader = fast_uploader(spool, client)
        with caplog.at_level("INFO", logger="appliance.spool"):
            await uploader.drain(timeout=30)
    assert spool.get(rid).state == st.COMPLETED
    refused = emulator.state.counters["connections_refused"]
    # Probing is capped-backoff (0.4 s cap here): a 2 s outage costs a few probes, not hundreds.
    assert 1 <= refused <= 25
    assert uploader.probes <= 25
    down_lines = [r for r in caplog.records if "network down" in r.getMessage()]
    assert len(down_lines) == 1


async def test_permanent_error_fails_with_reason_and_retry_recovers(tmp_path, emulator):
    spool = make_spool(tmp_path)
    rid = record_digits(spool, "3")
    async with client_for(emulator) as client:
        emulator.fail_http(status=500, count=1000, path_prefix="/v2/upload")
        await fast_uploader(spool, client, cfg={"max_attempts": 3}).drain(timeout=30)
        row = spool.get(rid)
        assert row.state == st.FAILED and "3 attempts" in row.last_error
        emulator.reset_faults()
        assert spool.retry(rid)
        await fast_uploader(spool, client).drain(timeout=30)
    assert spool.get(rid).state == st.COMPLETED


async def test_bad_key_fails_at_once(tmp_path, emulator):
    from appliance.cloud.rest import RestClient
    from appliance.secrets import Secret

    spool = make_spool(tmp_path)
    rid = record_digits(spool, "3")
    async with RestClient(emulator.http_url, Secret("wrong-key-123456")) as client:
        await fast_uploader(spool, client).drain(timeout=30)
    row = spool.get(rid)
    assert row.state == st.FAILED and "401" in row.last_error
    assert row.attempts == 0


async def test_same_content_is_uploaded_once(tmp_path, emulator):
    spool = make_spool(tmp_path)
    a = record_digits(spool, "1 1")
    b = record_digits(spool, "1 1")
    async with client_for(emulator) as client:
        await fast_uploader(spool, client).drain(timeout=30)
    assert spool.get(a).upload_url == spool.get(b).upload_url
    assert len(emulator.state.uploads) == 1


@pytest.mark.parametrize("twins", [2, 4])
async def test_identical_recordings_are_transcribed_once(tmp_path, emulator, twins):
    """Twins (bit-identical audio) ready together are submitted once and share the transcript,
    even though their steps run as concurrent tasks."""
    spool = make_spool(tmp_path)
    ids = [record_digits(spool, "3 1") for _ in range(twins)]
    async with client_for(emulator) as client:
        await fast_uploader(spool, client).drain(timeout=30)
    rows = [spool.get(rid) for rid in ids]
    assert all(r.state == st.COMPLETED for r in rows), [r.last_error for r in rows]
    assert len({r.transcript_id for r in rows}) == 1
    assert list(emulator.state.submissions_by_hash.values()) == [1]


async def test_nonsense_retry_after_values_are_clamped_never_a_hot_loop_or_a_year(
    tmp_path, emulator
):
    """429 with Retry-After -5, then 1e9, then two 503s: one upload, one submit, no rule broken."""
    import time

    spool = make_spool(tmp_path)
    rid = record_digits(spool, "4 2")
    emulator.clear_violations()
    emulator.fail_http(status=429, count=1, retry_after="-5", path_prefix="/v2/upload")
    emulator.fail_http(status=429, count=1, retry_after="1e9", path_prefix="/v2/upload")
    emulator.fail_http(status=503, count=2, path_prefix="/v2/transcript")
    retry = RetryLimits(retry_after_cap_seconds=2.0)  # the device's 300 s, shortened
    async with client_for(emulator, retry=retry) as client:
        started = time.monotonic()
        await fast_uploader(spool, client).drain(timeout=30)
        took = time.monotonic() - started
    row = spool.get(rid)
    assert row.state == st.COMPLETED, row.last_error
    assert 2.0 <= took < 20  # the 1e9 was waited out at its clamp, not for 31 years
    assert len(emulator.state.uploads) == 1  # not re-uploaded in a loop
    assert max(emulator.state.submissions_by_hash.values()) == 1
    assert api_requests(emulator) < 25
    assert [v.as_dict() for v in emulator.state.violations] == []


async def test_a_recording_left_unfinished_is_finished_off_the_event_loop(tmp_path, emulator):
    import threading

    from appliance import dtmf
    from tests.spool.helpers import RATE

    spool = make_spool(tmp_path)
    writer = spool.open_recording("record", RATE)
    writer.write(dtmf.generate("5", RATE))
    writer.sync()
    spool.open_writers.pop(writer.id)  # as a full disk leaves it: written, never finished
    threads: list[threading.Thread] = []
    recover = spool.recover

    def recover_and_note() -> list[str]:
        threads.append(threading.current_thread())
        return recover()

    spool.recover = recover_and_note  # type: ignore[method-assign]
    async with client_for(emulator) as client:
        await fast_uploader(spool, client).drain(timeout=30)
    assert spool.get(writer.id).state == st.COMPLETED
    assert threads and threading.main_thread() not in threads
