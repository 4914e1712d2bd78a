"""The local captions and status page (``web.enabled``), served from the daemon's loop."""

from appliance.web.server import CONTROL_ACTIONS, WebLimits, WebServer

__all__ = ["CONTROL_ACTIONS", "WebLimits", "WebServer"]
