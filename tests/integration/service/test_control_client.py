"""The crew commands' side of the control socket: 'no daemon' only when nobody listens, never when a daemon
took the request and the connection broke before its answer (it may have done it: doing it again without it
could mark a bib twice)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from gateway import control
from gateway.errors import GatewayError


async def test_no_socket_file_means_no_daemon(tmp_path: Path) -> None:
    with pytest.raises(control.DaemonNotRunning):
        await control.call(str(tmp_path / "outbox.ctl"), "GET", "/ping")


async def test_a_stale_socket_nobody_listens_on_means_no_daemon(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.ctl")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # the file of a killed daemon: bound once, nobody listening now
    stale.close()
    with pytest.raises(control.DaemonNotRunning):
        await control.call(path, "GET", "/ping")


async def test_a_daemon_dropping_the_request_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    path = str(tmp_path / "outbox.ctl")
    took = asyncio.Event()

    async def take_then_die(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request arrived...
        took.set()
        writer.close()  # ...and the daemon went away before answering

    server = await asyncio.start_unix_server(take_then_die, path=path)
    try:
        with pytest.raises(GatewayError, match=r"dropped the connection before answering POST /mark") as info:
            await control.call(path, "POST", "/mark", {"bib": "42"})
        assert not isinstance(info.value, control.DaemonNotRunning) and took.is_set()
        assert "\n" not in str(info.value)
    finally:
        server.close()
        await server.wait_closed()
