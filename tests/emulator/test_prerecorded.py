"""Pre-recorded REST emulation: auth, upload, submit, poll, exports, faults."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from appliance import dtmf


@pytest.fixture
def client(emulator):
    with httpx.Client(
        base_url=emulator.http_url, headers={"Authorization": emulator.api_key}, timeout=10
    ) as c:
        yield c


def wav_bytes(tmp_path, digits: str, rate: int = 16000, stereo: bool = False) -> bytes:
    audio = dtmf.generate(digits, rate)
    if stereo:
        audio = np.stack([audio, audio], axis=1)
    path = tmp_path / "clip.wav"
    dtmf.write_wav(path, audio, rate)
    return path.read_bytes()


def poll(client, transcript_id: str, timeout: float = 10.0) -> tuple[dict, list[str]]:
    statuses: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v2/transcript/{transcript_id}").json()
        if not statuses or statuses[-1] != body["status"]:
            statuses.append(body["status"])
        if body["status"] in ("completed", "error"):
            return body, statuses
        time.sleep(0.02)
    raise AssertionError(f"transcript stuck in {statuses}")


def transcribe(client, data: bytes, **options) -> tuple[dict, list[str], str]:
    url = client.post("/v2/upload", content=data).json()["upload_url"]
    body = {"audio_url": url, "speech_models": ["universal-3-pro", "universal-2"], **options}
    submitted = client.post("/v2/transcript", json=body).json()
    assert submitted["status"] == "queued"
    result, statuses = poll(client, submitted["id"])
    return result, statuses, url


@pytest.mark.parametrize(
    "auth", [None, "Bearer {key}", "wrong"], ids=["missing", "bearer", "wrong"]
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v2/upload"), ("POST", "/v2/transcript"), ("GET", "/v2/transcript/x")],
)
def test_bad_authorization_is_401_json(emulator, auth, method, path):
    headers = {} if auth is None else {"Authorization": auth.format(key=emulator.api_key)}
    r = httpx.request(method, emulator.http_url + path, headers=headers, content=b"x")
    assert r.status_code == 401
    assert r.json() == {"error": "Authentication error, API token missing/invalid"}


def test_multipart_upload_is_rejected(client):
    r = client.post("/v2/upload", files={"file": ("a.wav", b"RIFF....")})
    assert r.status_code == 400
    assert "multipart" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"audio_url": "http://x/a.wav"}, "speech_models is required"),
        ({"audio_url": "http://x/a.wav", "speech_models": "universal-2"}, "non-empty list"),
        ({"audio_url": "http://x/a.wav", "speech_models": []}, "non-empty list"),
        ({"audio_url": "http://x/a.wav", "speech_models": ["u3-rt-pro"]}, "Invalid speech model"),
        ({"speech_models": ["universal-2"]}, "audio_url is required"),
    ],
)
def test_invalid_submissions_are_400(client, body, error):
    r = client.post("/v2/transcript", json=body)
    assert r.status_code == 400
    assert error in r.json()["error"]


def test_uploaded_dtmf_file_is_transcribed_to_those_digits(client, emulator, tmp_path):
    result, statuses, url = transcribe(client, wav_bytes(tmp_path, "123 4#"))
    assert statuses == ["queued", "processing", "completed"]
    assert result["text"] == "One two three four pound."
    assert [w["text"] for w in result["words"]] == ["One", "two", "three", "four", "pound."]
    starts = [w["start"] for w in result["words"]]
    assert starts == pytest.approx([200, 400, 600, 1720, 1920], abs=25)
    assert result["audio_duration"] == 2
    assert result["speech_model_used"] == "universal-3-pro"
    assert isinstance(result["confidence"], float)
    assert emulator.state.submissions_for_upload(url) == 1
    sha = next(iter(emulator.state.uploads.values())).sha256
    assert emulator.state.submissions_by_hash[sha] == 1


@pytest.mark.parametrize(("rate", "stereo"), [(8000, False), (44100, True), (48000, False)])
def test_any_rate_mono_or_stereo_wav_is_accepted(client, tmp_path, rate, stereo):
    result, _, _ = transcribe(client, wav_bytes(tmp_path, "90", rate, stereo))
    assert result["text"] == "Nine zero."


def test_noise_and_non_audio_files(client, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.wav"
    dtmf.write_wav(path, rng.normal(0, 3000, 16000).astype(np.int16), 16000)
    result, _, _ = transcribe(client, path.read_bytes())
    assert result["status"] == "completed" and result["text"] == ""
    result, _, _ = transcribe(client, b"this is not audio at all")
    assert result["status"] == "error" and "audio" in result["error"]


def test_unknown_audio_url_ends_in_error(client):
    r = client.post(
        "/v2/transcript",
        json={"audio_url": "https://example.invalid/a.wav", "speech_models": ["universal-2"]},
    )
    result, statuses = poll(client, r.json()["id"])
    assert statuses[-1] == "error"
    assert result["error"].startswith("Download error to https://example.invalid/a.wav")


def test_duplicate_submissions_are_counted(client, emulator, tmp_path):
    data = wav_bytes(tmp_path, "1")
    url = client.post("/v2/upload", content=data).json()["upload_url"]
    url2 = client.post("/v2/upload", content=data).json()["upload_url"]
    for audio_url in (url, url, url2):
        client.post("/v2/transcript", json={"audio_url": audio_url, "speech_models": ["nano"]})
    assert emulator.state.submissions_for_upload(url) == 2
    assert emulator.state.submissions_for_upload(url2) == 1
    assert list(emulator.state.submissions_by_hash.values()) == [3]


def test_speaker_labels_sentences_paragraphs_and_subtitles(client, tmp_path):
    result, _, _ = transcribe(client, wav_bytes(tmp_path, "12 34"), speaker_labels=True)
    tid = result["id"]
    assert [u["speaker"] for u in result["utterances"]] == ["A"]
    sentences = client.get(f"/v2/transcript/{tid}/sentences").json()["sentences"]
    assert [s["text"] for s in sentences] == ["One two", "three four."]
    paragraphs = client.get(f"/v2/transcript/{tid}/paragraphs").json()["paragraphs"]
    assert len(paragraphs) == 1
    srt = client.get(f"/v2/transcript/{tid}/srt", params={"chars_per_caption": 8}).text
    assert srt.startswith("1\n00:00:00,")
    assert "\nOne two\n" in srt and "\nthree\n" in srt and "\nfour.\n" in srt
    vtt = client.get(f"/v2/transcript/{tid}/vtt").text
    assert vtt.startswith("WEBVTT\n\n00:00.")
    assert "One two three four." in vtt


def test_delete_and_404(client, tmp_path):
    assert client.get("/v2/transcript/nope").status_code == 404
    assert client.delete("/v2/transcript/nope").status_code == 404
    result, _, _ = transcribe(client, wav_bytes(tmp_path, "5"))
    deleted = client.delete(f"/v2/transcript/{result['id']}").json()
    assert deleted["text"] == "Deleted by user."
    assert client.get(f"/v2/transcript/{result['id']}").json()["words"] == []


def test_injected_429_and_5xx(client, emulator):
    emulator.fail_http(status=429, count=2, retry_after=3)
    for _ in range(2):
        r = client.get("/v2/transcript/x")
        assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    emulator.fail_http(status=503, count=1, path_prefix="/v2/upload")
    assert client.get("/v2/transcript/x").status_code == 404
    assert client.post("/v2/upload", content=b"abc").status_code == 503
    assert client.post("/v2/upload", content=b"abc").status_code == 200


def test_network_down_resets_connections_then_recovers(client, emulator):
    emulator.network_down(0.3)
    with pytest.raises(httpx.TransportError):
        client.get("/v2/transcript/x")
    time.sleep(0.35)
    assert client.get("/v2/transcript/x").status_code == 404
    assert emulator.state.counters["connections_refused"] >= 1


def test_list_transcripts_pages_newest_first_with_audio_urls(client, tmp_path):
    url = client.post("/v2/upload", content=wav_bytes(tmp_path, "1")).json()["upload_url"]
    body = {"audio_url": url, "speech_models": ["universal-2"]}
    ids = [client.post("/v2/transcript", json=body).json()["id"] for _ in range(3)]
    first = client.get("/v2/transcript", params={"limit": 2}).json()
    assert [t["id"] for t in first["transcripts"]] == [ids[2], ids[1]]
    assert all(t["audio_url"] == url for t in first["transcripts"])
    assert first["page_details"]["result_count"] == 2
    older = client.get(first["page_details"]["prev_url"]).json()
    assert [t["id"] for t in older["transcripts"]] == [ids[0]]
    assert older["page_details"]["prev_url"] is None


def test_list_transcripts_rejects_bad_limits_and_auth(client, emulator):
    assert client.get("/v2/transcript", params={"limit": 0}).status_code == 400
    assert client.get("/v2/transcript", params={"limit": 201}).status_code == 400
    assert client.get("/v2/transcript", params={"before_id": "nope"}).status_code == 400
    anonymous = httpx.get(f"{emulator.http_url}/v2/transcript", timeout=10)
    assert anonymous.status_code == 401
