"""Dead-link detection below the protocols: TCP keepalive on both link directions (a reader that lost power
sends no FIN, and csv/ipico have no heartbeat of their own to miss)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from gateway.links import Connection, open_link
from gateway.links.tcp import KEEPALIVE_COUNT, KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, StreamConnection
from tests.fixtures.links import TcpClientPeer, TcpServerPeer


def _options(conn: Connection) -> dict[str, int]:
    assert isinstance(conn, StreamConnection)
    sock: Any = conn._writer.get_extra_info("socket")
    out = {"keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
    for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"):
        if hasattr(socket, name):
            out[name] = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
    return out


async def _options_of_first_connection(url: str, peer: TcpServerPeer | TcpClientPeer) -> dict[str, int]:
    got: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()

    async def handler(conn: Connection) -> None:
        if not got.done():
            got.set_result(_options(conn))
        await conn.read()

    link = peer.make_link() if isinstance(peer, TcpClientPeer) else open_link(url, name="t", backoff_base=0.05)
    task = asyncio.create_task(link.run(handler))
    try:
        await peer.connected()
        return await asyncio.wait_for(got, 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("direction", ["tcp", "tcp-listen"])
async def test_keepalive_is_enabled_with_short_timers(direction: str) -> None:
    peer: TcpServerPeer | TcpClientPeer
    if direction == "tcp":
        peer = TcpServerPeer()
        await peer.start()
    else:
        peer = TcpClientPeer()
    try:
        opts = await _options_of_first_connection(peer.url, peer)
    finally:
        await peer.close()
    assert opts["keepalive"] != 0
    expected = {"TCP_KEEPIDLE": KEEPALIVE_IDLE_S, "TCP_KEEPINTVL": KEEPALIVE_INTERVAL_S, "TCP_KEEPCNT": KEEPALIVE_COUNT}
    for name, value in expected.items():
        if name in opts:  # where the platform has the option
            assert opts[name] == value, (name, opts)
    assert (KEEPALIVE_IDLE_S, KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT) == (10, 5, 3)
