"""LLM Gateway chat completions over HTTP: one request per call, failures classified.

The same transport and error classes as the pre-recorded client
(:mod:`appliance.cloud.rest`): the key raw in ``Authorization``, explicit
timeouts, no redirects, no hidden retries. A :class:`rest.Transient` without
a status (a timeout or a dropped connection after the request went out) is an
answer never seen: the caller must not assume the request was not charged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from appliance.cloud import rest
from appliance.protocol.gateway import Completion, UnusableAnswer, read_completion

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.secrets import Secret

DEFAULT_TIMEOUT_SECONDS = 120.0


class GatewayClient(rest.RestClient):
    """An httpx client bound to one chat-completions URL and the API key."""

    def __init__(
        self,
        url: str,
        api_key: Secret,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.path = parts.path or "/"
        timeouts = rest.RestTimeouts(read=timeout_seconds)
        origin = f"{parts.scheme}://{parts.netloc}"
        super().__init__(origin, api_key, timeouts=timeouts, transport=transport)

    @classmethod
    def for_summaries(cls, config: Config) -> GatewayClient:
        """The gateway of ``config``'s region (or ``endpoints``), with the device's API key."""
        if config.api_key is None:
            raise rest.Permanent("summaries need the API key on the device (LLM Gateway)")
        return cls(
            config.urls.llm_gateway_url,
            config.api_key,
            timeout_seconds=config.summary.timeout_seconds,
        )

    async def complete(self, body: dict[str, object]) -> Completion:
        """POST the chat completion; its answer, or :class:`rest.Permanent` if unusable."""
        response = await self._request("POST", self.path, "summary", json=body)
        data = self._json(response, "summary")
        try:
            return read_completion(data)
        except UnusableAnswer as exc:
            raise rest.Permanent(f"summary: {exc}", response.status_code) from None
