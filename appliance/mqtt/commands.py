"""What may arrive on ``<base>/cmd/<name>``: checked here, carried out by the daemon's controls.

A command names one of :data:`COMMANDS`; its payload is plain text (what
Home Assistant's buttons and select send) or a JSON object with optional
``request_id`` (echoed in the result), ``mode`` and ``id``. Anything else is
refused with a reason on ``<base>/result``. A valid command becomes the same
request the local page's controls make (``Daemon.web_control``), so the
button's rules decide, not MQTT.
"""

from __future__ import annotations

import dataclasses
import json

from appliance.modes import MODES

#: Larger payloads are refused unread.
MAX_PAYLOAD_BYTES = 1024
#: A request id longer than this is refused (it is echoed back).
MAX_REQUEST_ID_CHARS = 64
#: command name -> the control action it asks for.
COMMANDS: dict[str, str] = {
    "start": "start_session",
    "stop": "stop_session",
    "interrupt": "interrupt",
    "mode": "set_mode",
    "retry": "retry_spool",
    "volume": "set_volume",
    "mute": "toggle_mute",
}
#: What a ``mute`` payload may say, and the action each asks for.
MUTE_PAYLOADS = {"": "toggle_mute", "toggle": "toggle_mute", "on": "mute", "off": "unmute"}
#: What a ``volume`` payload may say besides a percent.
VOLUME_STEPS = {"up": "volume_up", "down": "volume_down"}


@dataclasses.dataclass(frozen=True)
class Command:
    """A valid command: the control action and its arguments."""

    name: str
    action: str
    args: dict[str, str]
    request_id: str | None = None


@dataclasses.dataclass(frozen=True)
class Refused:
    """An invalid command and why."""

    name: str
    reason: str
    request_id: str | None = None


def parse(name: str, payload: bytes) -> Command | Refused:
    """The command ``payload`` on ``<base>/cmd/<name>`` asks for, or why it is refused."""
    shown = name[:40]
    if name not in COMMANDS:
        return Refused(shown, f"unknown command; allowed: {', '.join(COMMANDS)}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Refused(name, f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Refused(name, "payload is not UTF-8 text")
    fields: dict[str, object] = {}
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            return Refused(name, "payload is not valid JSON")
        if not isinstance(loaded, dict):
            return Refused(name, "a JSON payload must be an object")
        fields = loaded
    elif text:
        key = {"mode": "mode", "retry": "id", "volume": "percent", "mute": "muted"}.get(name)
        fields = {key: text} if key else {}
    request_id = fields.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > MAX_REQUEST_ID_CHARS
    ):
        return Refused(name, f"request_id must be text of at most {MAX_REQUEST_ID_CHARS} chars")
    args: dict[str, str] = {}
    if name == "mode":
        mode = fields.get("mode")
        if mode == "next":
            return Command(name, "switch_mode", {}, request_id)
        if mode not in MODES:
            return Refused(name, f"mode must be one of {', '.join(MODES)} or next", request_id)
        args["mode"] = str(mode)
    elif name == "volume":
        value = str(fields.get("percent", "")).strip().lower()
        if value in VOLUME_STEPS:
            return Command(name, VOLUME_STEPS[value], {}, request_id)
        whole, _, fraction = value.partition(".")  # Home Assistant's number sends "50.0"
        if not whole.isdigit() or int(whole) > 100 or fraction.strip("0"):
            return Refused(name, "volume must be a percent from 0 to 100, up or down", request_id)
        args["percent"] = str(int(whole))
    elif name == "mute":
        value = str(fields.get("muted", "")).strip().lower()
        if value not in MUTE_PAYLOADS:
            return Refused(name, "mute must be on, off or toggle", request_id)
        return Command(name, MUTE_PAYLOADS[value], {}, request_id)
    elif name == "retry" and fields.get("id") is not None:
        ident = fields["id"]
        if not isinstance(ident, str) or not ident or len(ident) > 100:
            return Refused(name, "id must be a recording id", request_id)
        args["id"] = ident
    return Command(name, COMMANDS[name], args, request_id)


def result_payload(
    outcome: Command | Refused, answer: dict[str, object] | None = None
) -> dict[str, object]:
    """What ``<base>/result`` says about one command (``answer``: the daemon's reply)."""
    out: dict[str, object] = {"command": outcome.name}
    if outcome.request_id is not None:
        out["request_id"] = outcome.request_id
    if isinstance(outcome, Refused):
        out.update(ok=False, reason=outcome.reason)
        return out
    answer = dict(answer or {})
    ok = bool(answer.pop("ok", False))
    reason = answer.pop("error", None)
    out["ok"] = ok
    if not ok:
        out["reason"] = str(reason or "refused")
    out.update(answer)
    return out
