"""A client link (tcp://, serial) waits between attempts as its Backoff says: delays from the link's own
base and cap, growing over a streak of refusals, and starting again from the first window only after a
healthy connection (one that carried bytes or lived HEALTHY_AFTER_S), never after an accept-and-drop."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterator
from typing import ClassVar

import pytest

from gateway.backoff import Backoff
from gateway.links import base as links_base
from gateway.links import open_link
from gateway.links.base import Connection, Link
from tests.fixtures.links import eventually, free_port

BASE, CAP = 0.02, 0.16


class RecordingBackoff(Backoff):
    """Backoff as the link builds it, noting what it was built with and each delay it handed out."""

    made: ClassVar[list[RecordingBackoff]] = []
    probe: ClassVar[Callable[[], int]] = staticmethod(lambda: 0)

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        super().__init__(base, cap)
        self.base, self.cap = base, cap
        # (attempt of the streak, delay, loop time given, connections the link had accepted by then)
        self.given: list[tuple[int, float, float, int]] = []
        RecordingBackoff.made.append(self)

    def next_delay(self, retry_after: float | None = None) -> float:
        delay = super().next_delay(retry_after)
        self.given.append((self.attempts, delay, asyncio.get_running_loop().time(), RecordingBackoff.probe()))
        return delay


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[RecordingBackoff]]:
    state = random.getstate()
    random.seed(3097)  # tenacity's jitter uses the process-wide random
    made: list[RecordingBackoff] = []
    monkeypatch.setattr(RecordingBackoff, "made", made)
    monkeypatch.setattr(RecordingBackoff, "probe", staticmethod(lambda: 0))
    monkeypatch.setattr(links_base, "Backoff", RecordingBackoff)
    yield made
    random.setstate(state)


def _timed_opens(link: Link) -> list[float]:
    """Loop times at which the link tries to connect."""
    opens: list[float] = []
    original = link._open  # type: ignore[attr-defined]

    async def timed() -> Connection:
        opens.append(asyncio.get_running_loop().time())
        conn: Connection = await original()
        return conn

    link._open = timed  # type: ignore[attr-defined]
    return opens


async def _drain(conn: Connection) -> None:
    while await conn.read():
        pass


async def test_refused_connects_wait_the_backoffs_growing_delays(recording: list[RecordingBackoff]) -> None:
    link = open_link(f"tcp://127.0.0.1:{free_port()}", name="r", backoff_base=BASE, backoff_cap=CAP)
    opens = _timed_opens(link)
    task = asyncio.create_task(link.run(_drain))
    try:
        await eventually(lambda: len(opens) >= 8, what="eight connect attempts")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (backoff,) = recording
    assert (backoff.base, backoff.cap) == (BASE, CAP)  # the link's own settings reach its Backoff
    given = backoff.given[: len(opens) - 1]
    assert [g[0] for g in given] == list(range(1, len(given) + 1))  # one streak, one delay per refusal
    for (n, delay, at, _a), next_open in zip(given, opens[1:], strict=False):
        assert 0 <= delay <= min(CAP, BASE * 2 ** (n - 1))
        assert next_open - at >= delay - 0.002, (n, delay, next_open - at)  # the link really waited it
    assert sum(g[1] for g in given) > 0.05  # not a token pause: the streak's windows add up
    assert "Refused" in (link.state.last_error or "")


async def test_backoff_resets_after_a_healthy_connection_only(recording: list[RecordingBackoff]) -> None:
    port = free_port()
    link = open_link(f"tcp://127.0.0.1:{port}", name="r", backoff_base=BASE, backoff_cap=CAP)
    RecordingBackoff.probe = lambda: link.state.accepted
    task = asyncio.create_task(link.run(_drain))

    async def reader_once(payload: bytes) -> None:
        """The reader comes up for one connection, sends `payload`, hangs up and is gone again."""
        done = asyncio.Event()

        async def once(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            server.close()
            w.write(payload)
            await w.drain()
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()
            done.set()

        server = await asyncio.start_server(once, "127.0.0.1", port)
        try:
            await asyncio.wait_for(done.wait(), 5)
        finally:
            server.close()
            await server.wait_closed()

    def delays_after(accepted: int) -> list[tuple[int, float]]:
        return [(n, d) for n, d, _t, a in backoff.given if a == accepted]

    try:
        await eventually(lambda: bool(recording) and len(recording[0].given) >= 3, what="three refusals")
        (backoff,) = recording
        await reader_once(b"")  # accepts and hangs up at once, without a byte: not healthy
        await eventually(lambda: len(delays_after(1)) >= 3, what="refusals after the accept-and-drop")
        await reader_once(b"17,,2026-05-17T09:00:00Z\n")  # sends a read before it goes: healthy
        await eventually(lambda: len(delays_after(2)) >= 2, what="refusals after the healthy connection")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    refused = [n for n, _d in delays_after(0)]
    assert refused == list(range(1, len(refused) + 1))
    dropped = [n for n, _d in delays_after(1)]
    # the accept-and-drop did not reset: the streak goes on widening (a reader must not be hammered)
    assert dropped == list(range(len(refused) + 1, len(refused) + 1 + len(dropped)))
    healthy = delays_after(2)
    # after a connection that carried bytes: the first window again, then the streak grows from there
    assert [n for n, _d in healthy] == list(range(1, len(healthy) + 1))
    assert healthy[0][1] <= BASE
