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


async def test_status_tells_systemd_the_clock_is_not_synchronised(tmp_path: Path, enveloped: Emulator) -> None:
    """`systemctl status rufus-gateway` shows STATUS=: an unsynchronised clock is said there, and when it is
    synchronised the line says so no more."""
    from tests.e2e.test_guards import clock_daemon
    from tests.fixtures.ports import free_port

    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    got: list[str] = []
    listener = asyncio.create_task(_receive(sock, got))
    d, clock = clock_daemon(tmp_path, enveloped, free_port(), free_port(), "unsynced")
    d.env.update({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000"})
    try:
        await d.start()
        for _ in range(100):
            if any(m.startswith("READY=1") for m in got):
                break
            await asyncio.sleep(0.05)
        [ready] = [m for m in got if m.startswith("READY=1")]
        assert "system clock not synchronised" in ready and "uploads held" in ready, ready
        clock.write_text("synced")
        for _ in range(100):
            if any(m.startswith("STATUS=") and "clock" not in m for m in got[got.index(ready) + 1 :]):
                break
            await asyncio.sleep(0.05)
        later = [m for m in got[got.index(ready) + 1 :] if m.startswith("STATUS=")]
        assert later and "clock" not in later[-1], later
        assert await d.terminate() == 0
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        sock.close()
        await d.kill()
