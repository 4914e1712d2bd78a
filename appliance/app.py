"""``appliance run``: build the parts, run the daemon over them, close them in reverse.

Start-up order matters for systemd: STATUS says "starting" at once, READY=1
follows only when every part is open and the microphone delivers (the daemon
sends it), and a part that cannot be opened ends the process with "failed:
..." after closing what was opened. SIGTERM and SIGINT stop the daemon, which
ends its session cleanly; the parts then close through one ``AsyncExitStack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import wiring
from appliance.config import Config
from appliance.daemon import Daemon
from appliance.events import EventBus
from appliance.exitcodes import ExitCode
from appliance.service import ServiceNotifier

if TYPE_CHECKING:
    from appliance.mqtt.bridge import MqttBridge
    from appliance.web.server import WebServer

log = logging.getLogger("appliance.daemon")


class Appliance:
    """One running appliance: ``await Appliance(config).run()`` until :meth:`stop`.

    ``daemon`` (and ``web``, when the page is enabled) exist once ``ready`` is set.
    """

    def __init__(
        self,
        config: Config,
        *,
        events: EventBus | None = None,
        notifier: ServiceNotifier | None = None,
    ) -> None:
        self.config = config
        self.events = events or EventBus()
        self.notifier = notifier or ServiceNotifier()
        self.ready = asyncio.Event()
        self.daemon: Daemon | None = None
        self.web: WebServer | None = None
        self.mqtt: MqttBridge | None = None
        self._stopping = False

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or :meth:`stop`; the exit code for the process."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        self.notifier.status("starting")
        async with contextlib.AsyncExitStack() as stack:
            try:
                parts = await wiring.build(self.config, self.events, self.notifier, stack)
                daemon = Daemon(parts, ready=self.ready)
                self.web = await wiring.open_web(
                    self.config, self.events, daemon.status_snapshot, daemon.web_control, stack
                )
                self.mqtt = await wiring.open_mqtt(
                    self.config, self.events, daemon.mqtt_control, parts.microphone, stack
                )
            except Exception as exc:
                log.error("start-up failed: %s", exc)
                self.notifier.status(f"failed: {exc}")
                return ExitCode.FAILURE
            self.daemon = daemon
            if self._stopping:
                daemon.stop()
            return await daemon.run()
        raise AssertionError("unreachable")  # the stack never swallows an exception

    def stop(self) -> None:
        """Ask the appliance to stop (signal handlers call this); safe before it is ready."""
        self._stopping = True
        if self.daemon is not None:
            self.daemon.stop()


def run_daemon(config: Config, *, state_dir: Path | None = None) -> int:
    """Entry point of ``appliance run``."""
    if state_dir is not None:
        config.state_dir = state_dir
    try:
        return asyncio.run(Appliance(config).run())
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
