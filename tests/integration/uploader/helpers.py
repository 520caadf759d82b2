"""Helpers for the uploader/lifecycle tests: a real Outbox file, a real client against the loopback emulator."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.cloud.client import RufusClient, Timeouts
from gateway.cloud.models import DeviceBind, SessionCreate
from gateway.emulator import Emulator
from gateway.store import NewPassing, Store
from gateway.uploader import Uploader, UploaderSettings
from tests.fixtures.emulator import cloud_nums  # noqa: F401 - re-exported for the uploader tests
from tests.fixtures.wait import until as eventually  # noqa: F401 - this area's name for the one wait

T0 = datetime(2026, 5, 3, 9, 0, 0, tzinfo=UTC)
RW_KEY = "ror-0123456789abcdef0123"
W_KEY = "ror-fedcba9876543210fedc"
R_KEY = "ror-00000000ffffffff0000"  # READ only: every POST is answered 403

FAST = {"backoff_base": 0.02, "backoff_cap": 0.1, "linger_s": 0.02}


def fast(**kw: Any) -> UploaderSettings:
    return UploaderSettings(**(FAST | kw))


def client_for(emu: Emulator, key: str | None = None, *, read_timeout: float = 2.0) -> RufusClient:
    return RufusClient(
        emu.base_url,
        key if key is not None else emu.api_key,
        timeouts=Timeouts(connect=1.0, read=read_timeout, total=read_timeout + 1.0),
    )


@dataclass
class Env:
    emu: Emulator
    outbox: Store
    client: RufusClient
    deviceid: str
    token: str
    bib_seq: int = 0

    async def add(self, n: int) -> list[int]:
        """n new passings (bibs 1, 2, ... in order) numbered in the current session, as the pipeline stores
        them; returns their num_passings."""
        current = await self.outbox.current_session()
        assert current is not None
        new = []
        for _ in range(n):
            self.bib_seq += 1
            i = self.bib_seq
            new.append(
                NewPassing(
                    timestamp=T0 + timedelta(seconds=i, milliseconds=i % 1000),
                    bib=str(i),
                    chip=f"CHIP{i:05d}",
                    timezone="CET",
                )
            )
        return await self.outbox.add_passings(current.token_session, new)

    async def states(self, token: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in await self.outbox.rows(token or self.token):
            counts[r.state] = counts.get(r.state, 0) + 1
        return counts


async def make_env(emu: Emulator, tmp_path: Path, *, client: RufusClient | None = None) -> Env:
    outbox = await Store.open(tmp_path / "outbox.db")
    client = client or client_for(emu)
    deviceid = (await client.bind_device(DeviceBind("One4All", f"SN-{id(tmp_path) % 100000}"))).deviceid
    token = (await client.create_session(SessionCreate(deviceid, "race"))).token_session
    await outbox.set_meta("deviceid", deviceid)
    await outbox.set_current_session(token, alias="race", deviceid=deviceid, created_by_us=True, floor=0)
    return Env(emu, outbox, client, deviceid, token)


@contextlib.asynccontextmanager
async def running(up: Uploader) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(up.run(), name="uploader")
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not task.done() or task.cancelled() or task.exception() is None


async def all_sent(e: Env, n: int, token: str | None = None) -> Callable[[], Awaitable[bool]]:
    async def cond() -> bool:
        return (await e.states(token)).get("Sent", 0) == n

    return cond
