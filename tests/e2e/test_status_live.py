"""The live phone page's server side: /events (Server-Sent Events), the token once then a cookie, the access
log without the token. A real Gateway object over a real database, served by aiohttp's test server with the
options the daemon uses (StatusServer.runner_options)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from gateway import config as config_mod
from gateway.ingest import ReaderCounters
from gateway.model import Read
from gateway.pipeline import Pipeline
from gateway.service import Gateway, reader_rules, stamp_of
from gateway.status.server import COOKIE, StatusServer
from gateway.store import Store
from gateway.uploader import UploaderStatus
from tests.fixtures.daemon import write_config

TOKEN = "finish-line-wifi-7731"


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url="http://127.0.0.1:9",
        api_key="ror-00112233445566778899",
        readers=[{"name": "finish", "url": "tcp-listen://127.0.0.1:0", "format": "csv"}],
        db=str(tmp_path / "outbox.db"),
    )
    settings = config_mod.load(cfg)
    gw = Gateway(settings)
    gw.outbox = await Store.open(settings.outbox.path)
    await gw.outbox.set_current_session("S-1", alias="Lakeside 10k", deviceid=None, created_by_us=True)
    gw.state.token_session = "S-1"
    gw.pipeline = Pipeline(gw.outbox, reader_rules(settings), stamp_of(settings))
    gw.counters["finish"] = ReaderCounters()
    gw.state.phase = "running"
    try:
        yield gw
    finally:
        await gw.outbox.close()


@pytest.fixture
async def served(gateway: Gateway) -> AsyncIterator[tuple[StatusServer, TestClient[Any, Any]]]:
    server = StatusServer(gateway, "127.0.0.1:0", TOKEN)
    server.trust_loopback = False  # what a phone on the Wi-Fi sees, not the Pi itself
    test_server = TestServer(server.app)
    await test_server.start_server(**server.runner_options())  # TestServer() itself ignores runner options
    client: TestClient[Any, Any] = TestClient(test_server)
    try:
        yield server, client
    finally:
        await client.close()


async def _next_event(stream: aiohttp.StreamReader, timeout: float = 5.0) -> dict[str, Any]:
    """The data of the next `status` event on an open /events stream."""
    data = ""
    while True:
        line = (await asyncio.wait_for(stream.readline(), timeout)).decode()
        if line.startswith("data: "):
            data = line[len("data: ") :].strip()
        elif line == "\n" and data:
            result: dict[str, Any] = json.loads(data)
            return result


async def test_events_push_a_change_without_polling(served: tuple[StatusServer, TestClient[Any, Any]]) -> None:
    server, client = served
    async with client.get("/events", headers={"X-Status-Token": TOKEN}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        first = await _next_event(r.content)
        assert first["readers"][0]["reads"] == 0 and first["session_alias"] == "Lakeside 10k"
        # what a read does to the reader's counters (gateway/ingest.py)
        counters = server.gateway.counters["finish"]
        counters.reads, counters.last_read_at = 3, 1_780_000_000.0
        changed = await _next_event(r.content)
        assert changed["readers"][0]["reads"] == 3
        assert changed["readers"][0]["last_read_at"] == 1_780_000_000.0
        assert changed["readers"][0]["reads_last_min"] == 3


async def test_a_burst_of_changes_is_coalesced(served: tuple[StatusServer, TestClient[Any, Any]]) -> None:
    server, client = served
    async with client.get("/events", headers={"X-Status-Token": TOKEN}) as r:
        await _next_event(r.content)
        counters = server.gateway.counters["finish"]
        for n in range(1, 201):  # 200 reads within one tick of the loop
            counters.reads = n
            await asyncio.sleep(0)
        seen = []
        while not seen or seen[-1] != 200:
            seen.append((await _next_event(r.content))["readers"][0]["reads"])
        assert len(seen) <= 3, seen  # one event per tick, not one per read


async def test_no_token_is_refused_and_the_token_once_becomes_a_cookie(
    served: tuple[StatusServer, TestClient[Any, Any]],
) -> None:
    _server, client = served
    for path in ("/", "/events", "/status.json", "/metrics"):
        async with client.get(path) as r:
            assert r.status == 401, path
    async with client.get("/events", headers={"Cookie": f"{COOKIE}=wrong"}) as r:
        assert r.status == 401
    # the page's link: a redirect that drops the token from the address, with the cookie
    async with client.get(f"/?token={TOKEN}", allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/"
        cookie = r.cookies[COOKIE]
        assert cookie.value == TOKEN and cookie["httponly"] and cookie["samesite"] == "Strict"
    # from now on the cookie alone (the test client keeps it, as the phone's browser does)
    async with client.get("/") as r:
        assert r.status == 200 and "EventSource" in await r.text()
    async with client.get("/status.json") as r:
        assert r.status == 200 and (await r.json())["phase"] == "running"
    async with client.get("/metrics") as r:
        assert r.status == 200 and "rufus_gateway_outbox_passings" in await r.text()
    async with client.get("/events") as r:
        assert r.status == 200
        assert (await _next_event(r.content))["session_alias"] == "Lakeside 10k"


async def test_the_token_is_in_no_log_line(
    served: tuple[StatusServer, TestClient[Any, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    _server, client = served
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        async with client.get(f"/?token={TOKEN}") as r:
            assert r.status == 200
        async with client.get(f"/status.json?token={TOKEN}") as r:
            assert r.status == 200
        async with client.get("/status.json?token=a-wrong-guess") as r:
            assert r.status == 401
    access = [e for e in events if e.get("event") == "status request"]
    assert {e["path"] for e in access} >= {"/", "/status.json"}, events  # the access log did run
    text = caplog.text + json.dumps(events, default=str)
    assert TOKEN not in text and "a-wrong-guess" not in text


async def test_can_we_pack_up_only_once_every_passing_is_sent_and_nothing_waits(
    served: tuple[StatusServer, TestClient[Any, Any]],
) -> None:
    server, _client = served
    gw = server.gateway
    assert gw.outbox is not None
    gw.uploader = mock.Mock(status=UploaderStatus())
    # an empty journal and outbox, uploader idle: nothing to wait for
    assert (await server.snapshot(fresh=True))["pack_up"] == {"ok": True, "why": []}
    # a read journaled and not derived yet (no pipeline step): the reads wait
    read = Read(chip="C1", bib="7", timestamp=datetime.now(UTC), reader="finish")
    await gw.outbox.journal("finish", [read])
    snap = await server.snapshot(fresh=True)
    assert snap["pack_up"]["ok"] is False
    assert snap["pack_up"]["why"] == ["reads still waiting to become passings"]
    # derived: a Pending passing waits for the cloud
    assert gw.pipeline is not None
    await gw.pipeline.step(datetime.now(UTC) + timedelta(minutes=5))
    snap = await server.snapshot(fresh=True)
    assert snap["outbox"]["pending"] == 1
    assert snap["pack_up"] == {"ok": False, "why": ["1 passing(s) not yet in the cloud"]}
    # the cloud acknowledged it: yes
    await gw.outbox.mark_sent("S-1", [1])
    assert (await server.snapshot(fresh=True))["pack_up"] == {"ok": True, "why": []}
    # no key: nothing would ever be uploaded, so never "yes"
    gw.uploader = None
    assert (await server.snapshot(fresh=True))["pack_up"]["why"] == ["no API key configured: nothing is uploaded"]
