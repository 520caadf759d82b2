"""The local surfaces' protocol (gateway/snapshot.py): the status page and the control socket work over any
`Surface`, not only the Gateway, and what `Gateway.live()` hands them is a copy."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway import control
from gateway.control import ControlServer
from gateway.guards import ClockStatus, DiskStatus
from gateway.ingest import ReaderCounters
from gateway.links.base import LinkState
from gateway.service import Gateway
from gateway.snapshot import JournalFigures, Live, NotReady, OutboxFigures, ReaderFigures
from gateway.status.server import StatusServer
from gateway.store import OutboxStats
from tests.fixtures.surface import settings_in
from tests.fixtures.wait import until

TOKEN = "surface-token-4411"


class Scripted:
    """A Surface that is not a Gateway: what it shows is set by the test, the commands it gets are kept."""

    def __init__(self) -> None:
        self.phase = "running"
        self.ready = True
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def live(self) -> Live:
        return Live(
            phase=self.phase,
            started_at=1_780_000_000.0,
            deviceid="dev-9",
            token_session="S-9",
            alerts=("one alert",),
            watchdog_at=None,
            readers=(
                ReaderFigures(
                    name="finish",
                    format="csv",
                    url="tcp://timer:secret@10.0.0.5:3601",
                    link=LinkState(connected=True),
                    counters=ReaderCounters(reads=12),
                ),
            ),
            journal=JournalFigures(committed=12, duplicates=0, rejected=1, batches=3, last_commit_at=None, alive=True),
            pipeline=None,
            uploader=None,
            clock=ClockStatus(),
            disk=DiskStatus(free_mb=900.0),
            timezone="Europe/Paris",
        )

    async def outbox_figures(self) -> OutboxFigures | None:
        stats = OutboxStats(pending=2, sent=10, rejected=0, reads=12, oldest_pending_age_s=1.5, token_session="S-9")
        return OutboxFigures(stats=stats, session_alias="Harbour 5k", caught_up=True)

    async def command(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if not self.ready:
            raise NotReady()
        self.commands.append((action, dict(body)))
        return {"num_passing": 7, "token_session": "S-9"} if action == "mark" else {"ok": action}


async def test_the_status_page_shows_and_asks_only_through_the_surface() -> None:
    surface = Scripted()
    server = StatusServer(surface, "127.0.0.1:0", TOKEN)
    client: TestClient[Any, Any] = TestClient(TestServer(server.app))
    await client.start_server()
    try:
        headers = {"X-Status-Token": TOKEN}
        status = await (await client.get("/status.json", headers=headers)).json()
        assert status["phase"] == "running" and status["session_alias"] == "Harbour 5k"
        assert status["readers"][0]["reads"] == 12 and status["readers"][0]["connected"] is True
        assert status["readers"][0]["url"] == "tcp://10.0.0.5:3601"  # the password never leaves
        assert status["outbox"]["pending"] == 2 and status["alerts"] == ["one alert"]
        assert (await client.get("/healthz", headers=headers)).status == 200
        metrics = await (await client.get("/metrics", headers=headers)).text()
        assert 'rufus_gateway_reader_connected{reader="finish"} 1.0' in metrics
        assert "rufus_gateway_reads_journaled_total 12.0" in metrics

        r = await client.post("/manual", json={"bib": "418", "time": ""}, headers=headers)
        assert r.status == 200 and (await r.json())["num_passing"] == 7
        assert surface.commands == [("mark", {"bib": "418", "time": None})]
        surface.ready = False
        r = await client.post("/void", json={"num_passing": 7}, headers=headers)
        assert r.status == 503 and "not running yet" in (await r.json())["error"]
        surface.phase = "stopping"
        assert (await client.get("/healthz", headers=headers)).status == 503
    finally:
        await client.close()


async def test_the_control_socket_routes_every_command_to_the_surface(tmp_path: Path) -> None:
    surface = Scripted()
    path = str(tmp_path / "ctl.sock")
    task = asyncio.create_task(ControlServer(surface, path).serve())
    try:
        await until(lambda: Path(path).exists(), 10, "the control socket")
        assert (await control.call(path, "GET", "/ping"))["phase"] == "running"
        routes = {
            "/mark": "mark",
            "/void": "void",
            "/requeue": "requeue",
            "/prune": "prune",
            "/session/new": "session_new",
            "/session/close": "session_close",
            "/device/bind": "device_bind",
        }
        for route, action in routes.items():
            assert await control.call(path, "POST", route, {"n": 1}) == (
                {"num_passing": 7, "token_session": "S-9"} if action == "mark" else {"ok": action}
            )
        assert [a for a, _ in surface.commands] == list(routes.values())
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_live_snapshot_does_not_move_with_the_gateway(tmp_path: Path) -> None:
    gw = Gateway(settings_in(tmp_path, tmp_path / "outbox.db"))  # not started: nothing is opened
    counters = gw.counters["finish"] = ReaderCounters(reads=1)
    counters.skipped_kinds["heartbeat"] = 1
    before = gw.live()
    counters.reads = 5
    counters.skipped_kinds["heartbeat"] = 9
    gw.clock.status.reader_skew_s["finish"] = 3.0
    gw.state.alerts.append("later")
    assert before.readers[0].counters is not None
    assert before.readers[0].counters.reads == 1 and before.readers[0].counters.skipped_kinds == {"heartbeat": 1}
    assert before.clock.reader_skew_s == {} and before.alerts == ()
    after = gw.live()
    assert after.readers[0].counters is not None and after.readers[0].counters.reads == 5
    assert after.alerts == ("later",) and after.journal is None and after.readers[0].link is None
