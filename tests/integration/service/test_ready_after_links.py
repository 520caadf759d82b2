"""'running' (the control ping's phase, systemd's READY) comes only after every reader link made its first
attempt: a reader told to connect to a gateway that says it is ready is not refused by a listener still being
set up (seen in CI: a test's reads refused by a daemon that had just said 'running')."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from gateway import config as config_mod
from gateway import service
from gateway.links import tcp
from gateway.service import Gateway
from tests.fixtures.ports import free_port


def _settings(tmp_path: Path, port: int) -> config_mod.Settings:
    return config_mod.Settings(
        cloud=config_mod.CloudSettings(api_key=""),  # no cloud: only the readers matter here
        readers=(config_mod.ReaderSettings(name="mat", url=f"tcp-listen://127.0.0.1:{port}", format="csv"),),
        outbox=config_mod.OutboxSettings(path=str(tmp_path / "outbox.db")),
        status=config_mod.StatusSettings(listen=None),
        source="<test>",
    )


@contextlib.asynccontextmanager
async def running(gw: Gateway):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.running.wait(), 10)
        yield
    finally:
        gw.stop()
        await asyncio.wait_for(task, 10)


async def test_running_means_the_listener_is_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow_start = tcp.asyncio.start_server

    async def bind_slowly(*args, **kw):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.4)  # a loaded machine: the listener binds well after the tasks started
        return await slow_start(*args, **kw)

    monkeypatch.setattr(tcp.asyncio, "start_server", bind_slowly)
    port = free_port()
    gw = Gateway(_settings(tmp_path, port))
    async with running(gw):
        _r, w = await asyncio.open_connection("127.0.0.1", port)  # refused if 'running' came first
        w.close()
        await w.wait_closed()


async def test_a_link_that_never_gets_there_does_not_hold_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*_args, **_kw):  # type: ignore[no-untyped-def]
        await asyncio.Future()

    monkeypatch.setattr(tcp.asyncio, "start_server", never)
    monkeypatch.setattr(service, "LINK_FIRST_TRY_S", 0.3)
    gw = Gateway(_settings(tmp_path, free_port()))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with running(gw):
        assert loop.time() - t0 >= 0.3
        assert not gw.links["mat"].first_attempt.is_set()
