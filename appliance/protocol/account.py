"""Where every sample of one session went: the one account type of every mode.

``captured == delivered + spooled + skipped + lost``, to the sample, at the
session's ``rate``:

* **delivered**: reached where the mode sends audio (live: confirmed by the
  service; agent: sent to the agent, muted parts as silence; record: written
  into the recording);
* **spooled**: meant for live delivery, kept in the spool instead, to be
  transcribed later (live: an outage; agent: what the user said while a lost
  conversation could not hear it);
* **skipped**: not delivered on purpose, and not kept (the agent's lost
  context with no spool to take it);
* **lost**: gone (overwritten before it was read, or the spool refused it),
  always reported loudly.

Each mode's own counters are fields of a small subclass (the streaming core's
``SessionAccount``, the agent's ``ConversationAccount``, the recorder's
``RecordingAccount``). The daemon, the log line, the event feed (``session``
events' ``account``, docs/events.md), the status page and the spool read only
what this class has.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

#: The modes an account can be of (the same names as ``appliance.modes``).
AccountMode = Literal["live", "agent", "record"]


@dataclasses.dataclass(kw_only=True)
class Account:
    """Where every sample of one session went (see the module docstring for the rule)."""

    mode: AccountMode
    rate: int
    captured_samples: int = 0
    delivered_samples: int = 0
    spooled_samples: int = 0
    skipped_samples: int = 0
    lost_samples: int = 0
    stop_reason: str = ""
    #: Spool recordings that hold this session's spooled audio.
    spool_recordings: list[str] = dataclasses.field(default_factory=list)

    #: What the mode calls its delivered audio in the log line.
    delivered_as: ClassVar[str] = "delivered"
    #: The JSON key a mode's account had for it before this type (kept as a copy).
    delivered_key: ClassVar[str | None] = None

    def seconds(self, samples: int) -> float:
        return samples / self.rate if self.rate else 0.0

    @property
    def balanced(self) -> bool:
        return self.captured_samples == (
            self.delivered_samples + self.spooled_samples + self.skipped_samples + self.lost_samples
        )

    def spool_failed(self, samples: int) -> None:
        """``samples`` counted as spooled were not kept (spool full or absent): they are lost."""
        samples = max(0, min(samples, self.spooled_samples))
        self.spooled_samples -= samples
        self.lost_samples += samples

    def spooled_from_skipped(self, kept: int, lost: int = 0) -> None:
        """Of skipped audio, ``kept`` samples went to the spool and ``lost`` were gone first."""
        kept = max(0, min(kept, self.skipped_samples))
        self.skipped_samples -= kept
        self.spooled_samples += kept
        lost = max(0, min(lost, self.skipped_samples))
        self.skipped_samples -= lost
        self.lost_samples += lost

    def details(self) -> str:
        """The mode's own counters for the log line ("" for none)."""
        return ""

    def summary(self) -> str:
        """``captured 1.000 s = streamed 1.000 s + spooled 0.000 s + lost 0.000 s; ...``."""
        s = self.seconds
        parts = [f"{self.delivered_as} {s(self.delivered_samples):.3f} s"]
        parts.append(f"spooled {s(self.spooled_samples):.3f} s")
        if self.skipped_samples:
            parts.append(f"skipped {s(self.skipped_samples):.3f} s")
        parts.append(f"lost {s(self.lost_samples):.3f} s")
        line = f"captured {s(self.captured_samples):.3f} s = " + " + ".join(parts)
        details = self.details()
        if details:
            line += f"; {details}"
        return f"{line}; stop: {self.stop_reason}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (events, MQTT, the page): every field, each count also in seconds."""
        data = dataclasses.asdict(self)
        if self.delivered_key:
            data[self.delivered_key] = self.delivered_samples
        for key, value in list(data.items()):
            if key.endswith("_samples") and isinstance(value, int):
                data[key.removesuffix("_samples") + "_seconds"] = self.seconds(value)
        return data
