"""The client against the emulator, both dialects, real loopback sockets: every call, paging, the
error tree, and every passings_list item it sent checked against the contract's schema."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.cloud import (
    Bound,
    Closed,
    CloudPassing,
    DeviceBind,
    RufusClient,
    SessionCreate,
    SessionCreated,
    Timeouts,
    Unbound,
)
from gateway.emulator import ApiKey, Emulator
from gateway.errors import (
    AuthError,
    BadRequestError,
    NotFoundError,
    PayloadTooLargeError,
    RetryableError,
    SessionClosedError,
)
from gateway.model import Passing
from tests.fixtures.emulator import make_key
from tests.integration.cloud.passing_schema import passing_problems, request_problems

T0 = datetime(2026, 5, 1, 9, 0, 0, tzinfo=UTC)


def passings(first: int, count: int, **extra: Any) -> list[Passing]:
    return [Passing(T0 + timedelta(seconds=n, microseconds=n * 1001), n, str(100 + n), **extra)
            for n in range(first, first + count)]  # fmt: skip


async def bind(client: RufusClient, serial: str) -> str:
    return (await client.bind_device(DeviceBind("One4All", serial))).deviceid


async def new_session(client: RufusClient, deviceid: str) -> str:
    return (await client.create_session(SessionCreate(deviceid))).token_session


def sent_items(emu: Emulator) -> list[dict[str, Any]]:
    return [item for r in emu.state()["requests"] if r["path"] == "/v0/passings" for item in r["body"]["passings_list"]]


async def test_every_call_round_trips(any_emulator: Emulator) -> None:
    emu = any_emulator
    async with RufusClient(emu.base_url, emu.api_key) as client:
        bound = await client.bind_device(DeviceBind("One4All", "SN-9", alias="Finish", firmware="2.3", type="timer"))
        assert bound.description == "Device binded succesfully" and isinstance(bound, Bound)
        d = bound.deviceid
        assert await bind(client, "SN-10") != d
        devices = await client.list_devices()
        assert [x.serial_number for x in devices] == ["SN-9", "SN-10"]
        info = await client.device_info(d)
        assert (info.deviceid, info.model, info.alias, info.firmware, info.type, info.sessions) == (
            d, "One4All", "Finish", "2.3", "timer", 0)  # fmt: skip
        assert await client.device_sessions(d) == []
        assert await client.active_session(d) is None
        created = await client.create_session(SessionCreate(d, "10K"))
        assert isinstance(created, SessionCreated) and created.description == "Session inserted succesfully"
        t1 = created.token_session
        t2 = await new_session(client, d)
        sessions = await client.device_sessions(d)
        assert [(s.token_session, s.active, s.alias) for s in sessions] == [(t1, False, "10K"), (t2, True, None)]
        active = await client.active_session(d)
        assert active is not None and active.token_session == t2 and active.passings == 0
        batch = [
            Passing(T0, 1, "7", chip="C7", participant_id="P7", status="ok", timezone="CET", gender="F",
                    latitude=45.5, longitude=-0.25),
            Passing(T0 + timedelta(milliseconds=1500), 2, "8", latitude=0.0, longitude=0.0),
            Passing(T0 + timedelta(seconds=3), 3, "9"),
        ]  # fmt: skip
        result = await client.insert_passings(t2, batch)
        assert (result.inserted_count, result.duplicate_count) == (3, 0)
        result = await client.insert_passings(t2, [*batch[1:], *passings(4, 1)])
        assert (result.inserted_count, result.duplicate_count) == (1, 2)
        back = await client.session_passings(t2)
        assert [p.num_passing for p in back] == [1, 2, 3, 4]
        assert back[0] == CloudPassing(t2, d, T0, 1, "7", "C7", "P7", "ok", "CET", "F", 45.5, -0.25)
        assert back[1].latitude == 0.0 and back[1].timestamp == T0 + timedelta(milliseconds=1500)
        assert [p.num_passing for p in await client.session_passings(t2, first=2, last=3)] == [2, 3]
        assert await client.session_passings(t2, first=10) == []
        window = await client.device_passings(d, T0 + timedelta(seconds=1), T0 + timedelta(seconds=3))
        assert [p.num_passing for p in window] == [2, 3]
        assert await client.device_passings(d, start=T0 + timedelta(days=1)) == []
        assert await client.max_num_passing(t2) == 4
        assert await client.max_num_passing(t1) == 0
        info2 = await client.session_info(t2)
        assert (info2.passings, info2.first, info2.last, info2.active) == (4, 1, 4, True)
        assert await client.close_session(t2) == Closed(t2, "Session closed succesfully")
        assert (await client.session_info(t2)).active is False
        assert await client.active_session(d) is None
        assert await client.unbind_device(d) == Unbound(d, "Device unbinded succesfully")
        with pytest.raises(NotFoundError):
            await client.device_info(d)
        with pytest.raises(NotFoundError):
            await client.session_info(t2)
    for problem_list in (request_problems(r["body"]) for r in emu.state()["requests"] if r["path"] == "/v0/passings"):
        assert problem_list == []


async def test_session_passings_pages_past_5000(any_emulator: Emulator) -> None:
    emulator = any_emulator
    async with RufusClient(emulator.base_url, emulator.api_key) as client:
        d = await bind(client, "SN-P")
        t = await new_session(client, d)
        await client.insert_passings(t, passings(1, 5000))
        await client.insert_passings(t, passings(5001, 1))
        got = await client.session_passings(t)
        assert [p.num_passing for p in got] == list(range(1, 5002))
        pages = [r["path"] for r in emulator.state()["requests"] if r["path"].startswith("/v0/passings/session")]
        assert [("page=1" in p, "page=2" in p) for p in pages] == [(True, False), (False, True)]
        assert len(await client.device_passings(d)) == 5001
        assert await client.max_num_passing(t) == 5001


async def test_max_num_passing_with_gaps_and_a_closed_session(emulator: Emulator) -> None:
    async with RufusClient(emulator.base_url, emulator.api_key) as client:
        d = await bind(client, "SN-L")
        t = await new_session(client, d)
        await client.insert_passings(t, [*passings(1, 3), *passings(40, 1)])
        await new_session(client, d)  # closes t: its numbers still count
        assert await client.max_num_passing(t) == 40


async def test_every_sent_item_matches_the_contract_schema(any_emulator: Emulator) -> None:
    emu = any_emulator
    async with RufusClient(emu.base_url, emu.api_key) as client:
        t = await new_session(client, await bind(client, "SN-S"))
        varied = [
            Passing(datetime(2026, 5, 1, 11, 0, 0, 999999, tzinfo=timezone_plus2()), 1, "1"),  # local zone, µs
            Passing(T0, 2, "2", chip="ABC", latitude=1, longitude=2),  # ints become numbers, not strings
            Passing(T0, 3, "3", chip=None, participant_id="p", status="DNF", timezone="UTC", gender="M"),
            Passing(T0, 0, ""),  # num_passing 0 and an empty bib are allowed by the schema
        ]
        await client.insert_passings(t, varied)
    items = sent_items(emu)
    assert len(items) == 4
    for item in items:
        assert passing_problems(item) == [], item
    assert items[0]["timestamp"] == "2026-05-01T09:00:00.999Z"
    assert "chips" not in items[1] and items[1]["chip"] == "ABC"
    assert isinstance(items[1]["latitude"], float) and items[1]["latitude"] == 1.0
    # unknown optional values are left out rather than sent as null
    assert set(items[3]) == {"timestamp", "num_passing", "bib"}


def timezone_plus2() -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=2))


def test_schema_validator_catches_what_the_contract_forbids() -> None:
    ok = {"timestamp": "2026-05-01T09:00:00.000Z", "num_passing": 1, "bib": "1"}
    assert passing_problems(ok) == []
    for bad, words in [
        ({**ok, "chips": "x"}, "unknown key"),
        ({**ok, "timestamp": "2026-05-01T09:00:00Z"}, "timestamp"),
        ({**ok, "timestamp": "2026-05-01 09:00:00.000Z"}, "timestamp"),
        ({**ok, "num_passing": "1"}, "num_passing"),
        ({**ok, "num_passing": True}, "num_passing"),
        ({**ok, "bib": 1}, "bib"),
        ({**ok, "latitude": "0.0"}, "latitude"),
        ({**ok, "gender": 1}, "gender"),
        ({"timestamp": ok["timestamp"], "num_passing": 1}, "missing"),
    ]:
        problems = passing_problems(bad)
        assert problems and words in problems[0], (bad, problems)
    problems = request_problems({"token_session": "abc", "passings_list": [ok]})
    assert problems == ["token_session 'abc' is not 64 uppercase hex"]


async def test_auth_errors(any_dialect: str, emulator_factory: Callable[..., Any]) -> None:
    read, write = make_key(), make_key()
    emu = await emulator_factory(dialect=any_dialect, api_keys=[ApiKey(read, "READ"), ApiKey(write, "WRITE")])
    assert emu.dialect == any_dialect
    async with RufusClient(emu.base_url, make_key()) as stranger:
        with pytest.raises(AuthError) as err:
            await stranger.list_devices()
        assert err.value.status == 401 and "unknown api key" in (err.value.description or "")
    async with RufusClient(emu.base_url, read) as reader, RufusClient(emu.base_url, write, key_header="x-api-key") as w:
        d = await bind(w, "SN-A")  # the x-api-key header is accepted too
        with pytest.raises(AuthError) as err:
            await bind(reader, "SN-B")
        assert err.value.status == 403 and "Forbidden" in (err.value.description or "")
        with pytest.raises(AuthError):
            await w.device_info(d)
        with pytest.raises(AuthError):
            await w.unbind_device(d)  # WRITE without the unbind flag


async def test_not_found_closed_bad_request_and_too_large(any_emulator: Emulator) -> None:
    emu = any_emulator
    async with RufusClient(emu.base_url, emu.api_key) as client:
        with pytest.raises(NotFoundError) as nf:
            await new_session(client, "F" * 64)
        assert not isinstance(nf.value, SessionClosedError) and nf.value.description == "Device not found"
        d = await bind(client, "SN-E")
        t1 = await new_session(client, d)
        await new_session(client, d)  # closes t1
        with pytest.raises(SessionClosedError) as closed:
            await client.insert_passings(t1, passings(1, 1))
        assert closed.value.status == 404
        with pytest.raises(NotFoundError):
            await client.session_info("A" * 64)
        with pytest.raises(NotFoundError):
            await client.close_session("A" * 64)
        t = (await client.active_session(d)).token_session  # type: ignore[union-attr]
        emu.set_faults(reject_bib="13")
        with pytest.raises(BadRequestError) as bad:
            await client.insert_passings(t, [Passing(T0, 1, "12"), Passing(T0, 2, "13")])
        assert bad.value.description is not None and "13" in bad.value.description
        emu.set_faults(reject_bib=None)
        with pytest.raises(BadRequestError) as bad:
            await client.insert_passings(t, [])
        assert "passings_list" in (bad.value.description or "")
        with pytest.raises(PayloadTooLargeError):
            await client.insert_passings(t, passings(1, 5001))
        assert emu.state()["sessions"][t]["num_passings"] == []


async def test_fault_modes_are_retryable(any_emulator: Emulator) -> None:
    emu = any_emulator
    quick = Timeouts(connect=1.0, read=0.3, total=2.0)
    async with RufusClient(emu.base_url, emu.api_key, timeouts=quick) as client:
        d = await bind(client, "SN-F")
        t = await new_session(client, d)
        emu.set_faults(error_rate=1.0, error_status=503, retry_after=2)
        with pytest.raises(RetryableError) as err:
            await client.device_info(d)
        assert (err.value.status, err.value.retry_after, err.value.clock_suspect) == (503, 2.0, False)
        for status in (408, 429, 500, 502, 504):
            emu.set_faults(error_status=status, retry_after=None)
            with pytest.raises(RetryableError) as err:
                await client.insert_passings(t, passings(1, 1))
            assert err.value.status == status and err.value.retry_after is None
        emu.set_faults(error_rate=0.0, drop_after_commit=1.0)
        with pytest.raises(RetryableError):
            await client.insert_passings(t, passings(1, 2))
        emu.set_faults(drop_after_commit=0.0)
        assert (await client.insert_passings(t, passings(1, 2))).duplicate_count == 2  # it was committed
        emu.set_faults(hang_rate=1.0, hang_s=30)
        with pytest.raises(RetryableError, match=r"read timed out \(nothing received for 0.3 s\)"):
            await client.device_info(d)
        emu.set_faults(hang_rate=0.0)
        emu.set_offline(True)
        with pytest.raises(RetryableError, match="connection failed"):
            await client.device_info(d)
        emu.set_offline(False)
        assert (await client.device_info(d)).deviceid == d  # the same client recovers on the same port
        assert client.failures == 9 and client.requests >= 12


async def test_paging_ends_only_on_passings_not_found(any_emulator: Emulator) -> None:
    """`Passings not found` is an empty range; `Session not found`/`Device not found` are an unknown (or unbound)
    session or device, and returning [] for them would let a caller number from 0 over a session it cannot see."""
    emu = any_emulator
    async with RufusClient(emu.base_url, emu.api_key) as client:
        d = await bind(client, "SN-404")
        t = await new_session(client, d)
        assert await client.session_passings(t) == [] and await client.device_passings(d) == []
        await client.insert_passings(t, passings(1, 2))
        assert await client.session_passings(t, first=3) == []
        for call, wording in [
            (client.session_passings("E" * 64), "Session not found"),
            (client.device_passings("E" * 64), "Device not found"),
        ]:
            with pytest.raises(NotFoundError) as err:
                await call
            assert err.value.description == wording
        await client.unbind_device(d)
        with pytest.raises(NotFoundError, match="Session not found"):
            await client.session_passings(t)
        with pytest.raises(NotFoundError, match="Device not found"):
            await client.device_passings(d, start=T0)
        with pytest.raises(NotFoundError):
            await client.max_num_passing(t)
