"""Manual entry on the phone page's server: POST /manual and /void go through Surface.command, the control
socket's own mark/void path, so a typed bib lands in the outbox exactly as `rufus-gateway mark` puts it
there (origin manual), and bad input gets one clear line and a 4xx. Same fixtures as the live page's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.status.server import StatusServer
from tests.e2e.test_status_live import TOKEN, gateway, served

__all__ = ["gateway", "served"]  # the fixtures, re-used

HEADERS = {"X-Status-Token": TOKEN}


async def _rows(server: StatusServer) -> list[tuple[int, str, str, str]]:
    assert server.gateway.outbox is not None
    return [(r.passing.num_passing, r.passing.bib, r.state, r.origin) for r in await server.gateway.outbox.rows("S-1")]


async def test_a_typed_bib_is_journaled_and_derived_like_mark(
    served: tuple[StatusServer, TestClient[Any, Any]],
) -> None:
    server, client = served
    async with client.post("/manual", json={"bib": "417"}, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
        answer = await r.json()
    assert answer["num_passing"] == 1 and answer["bib"] == "417" and answer["token_session"] == "S-1"
    assert await _rows(server) == [(1, "417", "Pending", "manual")]
    # with a time of day typed on the phone (its own UTC offset sent by the page)
    earlier = datetime.now(UTC) - timedelta(minutes=3)
    body = {"bib": "88", "time": earlier.strftime("%H:%M:%S"), "utc_offset_min": 0}
    async with client.post("/manual", json=body, headers=HEADERS) as r:
        assert r.status == 200, await r.text()
    rows = await _rows(server)
    assert rows[1] == (2, "88", "Pending", "manual")
    assert server.gateway.outbox is not None
    stored = (await server.gateway.outbox.rows("S-1"))[1].passing.timestamp
    assert stored.astimezone(UTC) == earlier.replace(microsecond=0), stored


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"bib": ""}, "bib: type the bib the mat missed"),
        ({"bib": "   "}, "bib: type the bib the mat missed"),
        ({"bib": "12 34"}, "bib: '12 34' is not a bib (digits and letters, at most 12, no spaces)"),
        ({"bib": "<b>1</b>"}, "bib: '<b>1</b>' is not a bib (digits and letters, at most 12, no spaces)"),
        ({"bib": "7", "time": "quarter past nine"}, "time: "),
        ({"bib": "7", "time": "25:61:00"}, "time: "),
    ],
)
async def test_bad_input_gets_one_clear_line_and_nothing_is_stored(
    served: tuple[StatusServer, TestClient[Any, Any]], body: dict[str, Any], message: str
) -> None:
    server, client = served
    async with client.post("/manual", json=body, headers=HEADERS) as r:
        assert r.status == 400
        error = (await r.json())["error"]
    assert error.startswith(message) and "\n" not in error, error
    assert await _rows(server) == []


async def test_a_time_in_the_future_is_refused(served: tuple[StatusServer, TestClient[Any, Any]]) -> None:
    server, client = served
    later = datetime.now(UTC) + timedelta(minutes=10)
    body = {"bib": "7", "time": later.strftime("%H:%M:%S"), "utc_offset_min": 0}
    async with client.post("/manual", json=body, headers=HEADERS) as r:
        assert r.status == 400
        assert "is in the future" in (await r.json())["error"]
    assert await _rows(server) == []


async def test_writes_need_the_token_and_this_page_as_origin(served: tuple[StatusServer, TestClient[Any, Any]]) -> None:
    server, client = served
    async with client.post("/manual", json={"bib": "5"}) as r:
        assert r.status == 401
    # another site riding on the phone's cookie: the browser sends its Origin
    async with client.post("/manual", json={"bib": "5"}, headers={**HEADERS, "Origin": "http://evil.example"}) as r:
        assert r.status == 403
    assert await _rows(server) == []


async def test_a_mistyped_entry_is_voided_under_mark_voids_rule(
    served: tuple[StatusServer, TestClient[Any, Any]],
) -> None:
    server, client = served
    async with client.post("/manual", json={"bib": "999"}, headers=HEADERS) as r:
        num = (await r.json())["num_passing"]
    async with client.post("/void", json={"num_passing": num}, headers=HEADERS) as r:
        assert r.status == 200 and (await r.json()) == {"voided": num}
    assert await _rows(server) == [(num, "999", "Voided", "manual")]
    # voided already, or never a manual passing: refused with the reason
    async with client.post("/void", json={"num_passing": num}, headers=HEADERS) as r:
        assert r.status == 409 and "not a Pending manual passing" in (await r.json())["error"]
    async with client.post("/void", json={"num_passing": "x"}, headers=HEADERS) as r:
        assert r.status == 400 and (await r.json())["error"] == "num_passing: 'x' is not a passing number"
