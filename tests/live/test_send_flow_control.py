"""When a live frame may skip its send timeout: only if the transport cannot make it wait."""

import asyncio
import socket

from appliance.live import _send_cannot_stall


class _Conn:
    """What ``_send_cannot_stall`` reads of a WebSocket connection: its transport."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport


def test_a_frame_skips_the_timeout_only_while_the_buffer_stays_under_its_low_mark():
    async def main() -> tuple[bool, bool, bool]:
        ours, peer = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        transport.set_write_buffer_limits(high=32768, low=8192)
        conn = _Conn(transport)
        empty_small = _send_cannot_stall(conn, 3200)  # a 100 ms frame on an idle socket
        empty_big = _send_cannot_stall(conn, 16000)  # a catch-up frame could cross the mark
        transport.write(b"\0" * 1_000_000)  # the peer reads nothing: the rest stays buffered
        backed_up = _send_cannot_stall(conn, 3200)
        transport.abort()
        peer.close()
        return empty_small, empty_big, backed_up

    assert asyncio.run(main()) == (True, False, False)
