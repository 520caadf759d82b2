"""systemd Type=notify: READY once running, WATCHDOG=1 while making progress (even with the cloud down),
STOPPING on SIGTERM. The daemon talks to a datagram socket we bind, exactly as systemd's would be."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from gateway.emulator import Emulator
from tests.e2e.support import make, until


async def _receive(sock: socket.socket, into: list[str]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await loop.sock_recv(sock, 4096)
        into.append(data.decode())


async def test_ready_watchdog_through_a_cloud_outage_and_stopping(tmp_path: Path, enveloped: Emulator) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    got: list[str] = []
    listener = asyncio.create_task(_receive(sock, got))
    enveloped.set_offline(True)  # a 4G outage from the start must not stop the watchdog (invariant 9)
    d = make(tmp_path, enveloped, 0)
    d.env.update({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"})  # a ping every 0.3 s
    try:
        await d.start()
        await until(lambda: any(m.startswith("READY=1") for m in got), 15, "READY=1", lambda: str(got))
        await until(lambda: got.count("WATCHDOG=1") >= 3, 15, "3 watchdog pings while offline", lambda: str(got))
        assert await d.terminate() == 0
        await until(lambda: "STOPPING=1" in got, 5, "STOPPING=1", lambda: str(got))
        assert got.index("STOPPING=1") > max(i for i, m in enumerate(got) if m.startswith("READY=1"))
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        sock.close()
        await d.kill()
