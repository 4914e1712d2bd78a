"""Small helpers shared by the spool tests."""

from __future__ import annotations

from pathlib import Path

from appliance import dtmf
from appliance.cloud.rest import RestClient, RestTimeouts
from appliance.config import UploadConfig
from appliance.secrets import Secret
from appliance.spool import Spool, SpoolParams

RATE = 16000


def upload_config(**kw) -> UploadConfig:
    """The daemon's upload settings, polled fast for tests; ``kw`` overrides any of them."""
    return UploadConfig(**{"poll_seconds": 0.1, "write_timeout_seconds": 30.0, **kw})


def make_spool(tmp_path: Path, **kw) -> Spool:
    base = dict(directory=tmp_path / "spool", quota_bytes=50_000_000, min_free_bytes=0)
    base.update(kw)
    return Spool(SpoolParams(**base))


def client_for(emulator, **kw) -> RestClient:
    timeouts = RestTimeouts(connect=2, read=kw.pop("read", 5), write=5, pool=2)
    return RestClient(emulator.http_url, Secret(emulator.api_key), timeouts=timeouts, **kw)


def record_digits(spool: Spool, digits: str, origin: str = "record", **kw) -> str:
    audio = dtmf.generate(digits, RATE)
    writer = spool.open_recording(origin, RATE, **kw)
    for start in range(0, len(audio), 1600):
        writer.write(audio[start : start + 1600])
    return writer.close()


def api_requests(emulator, path_prefix: str = "/v2/") -> int:
    return sum(1 for _m, p, _s in emulator.state.http_requests if p.startswith(path_prefix))
