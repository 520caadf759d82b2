"""Fault modes, the admin endpoint, offline/online on the same port, persistence, and the HTML page."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from gateway import log
from gateway.emulator import Emulator, Faults, server
from gateway.emulator.server import ADMIN_ROUTES
from gateway.emulator.store import Store
from gateway.log import get_logger
from tests.fixtures.emulator import make_key

PASSING = {"timestamp": "2026-05-01T09:00:01.000Z", "num_passing": 1, "bib": "1"}


async def call(
    emu: Emulator, method: str, path: str, body: Any = None, key: str | None = None, timeout: float = 5.0
) -> tuple[int, Any, dict[str, str]]:
    headers = {"api_key": key or emu.api_key}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http,
        http.request(method, emu.base_url + path, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None), dict(resp.headers)


def unwrap(emu: Emulator, payload: Any) -> Any:
    return payload["body"] if emu.dialect == "enveloped" else payload


async def device_and_session(emu: Emulator) -> tuple[str, str]:
    _, b, _ = await call(emu, "POST", "/devices", {"model": "One4All", "serial_number": "S1"})
    d = unwrap(emu, b)["deviceid"]
    _, b, _ = await call(emu, "POST", "/sessions", {"deviceid": d})
    return d, unwrap(emu, b)["token_session"]


async def admin(emu: Emulator, method: str, path: str, body: Any = None, token: str | None = "ok") -> tuple[int, Any]:
    headers = {}
    if token == "ok":
        headers["Authorization"] = f"Bearer {emu.admin_token}"
    elif token is not None:
        headers["X-Admin-Token"] = token
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, emu.admin_url + path, json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_error_fault_answers_the_configured_status_with_retry_after(any_emulator: Emulator) -> None:
    emu = any_emulator
    emu.set_faults(error_rate=1.0, error_status=429, retry_after=7)
    status, payload, headers = await call(emu, "GET", "/devices")
    assert status == 429 and headers["Retry-After"] == "7"
    assert "429" in unwrap(emu, payload)["description"]
    emu.set_faults(error_status=500, retry_after=None)
    status, payload, headers = await call(emu, "GET", "/devices")
    assert status == 500 and "Retry-After" not in headers
    # the enveloped 500 is {"body": null}; the bare one still says what happened
    assert payload == {"body": None} if emu.dialect == "enveloped" else isinstance(payload["description"], str)
    state = emu.state()
    assert state["faults_fired"]["error"] == 2
    assert [r["status"] for r in state["requests"]] == [429, 500]
    assert all(r["fault"] == "error" for r in state["requests"])


async def test_error_rate_is_a_share_of_requests(emulator: Emulator) -> None:
    emulator.set_faults(error_rate=0.5)
    statuses = [(await call(emulator, "GET", "/devices"))[0] for _ in range(40)]
    assert 0 < statuses.count(503) < 40 and statuses.count(200) == 40 - statuses.count(503)


async def test_latency_delays_answers(emulator: Emulator) -> None:
    emulator.set_faults(latency_ms=300)
    with pytest.raises(TimeoutError):
        await call(emulator, "GET", "/devices", timeout=0.1)
    emulator.set_faults(latency_ms=0)
    assert (await call(emulator, "GET", "/devices", timeout=2))[0] == 200


async def test_drop_after_commit_stores_the_batch_but_sends_no_answer(any_emulator: Emulator) -> None:
    emu = any_emulator
    _, token = await device_and_session(emu)
    emu.set_faults(drop_after_commit=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await call(emu, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]})
    emu.set_faults(drop_after_commit=0.0)
    assert emu.state()["sessions"][token]["num_passings"] == [1]
    # the re-send after the lost answer is a duplicate, not a second copy
    status, payload, _ = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]})
    assert status in (200, 201) and unwrap(emu, payload)["duplicate_count"] == 1
    assert emu.state()["sessions"][token]["num_passings"] == [1]
    assert emu.state()["faults_fired"]["drop_after_commit"] == 1
    # reads are not dropped: the fault is about a committed write whose answer is lost
    emu.set_faults(drop_after_commit=1.0)
    assert (await call(emu, "GET", f"/sessions/{token}"))[0] == 200


async def test_hang_holds_the_answer_past_the_client_timeout(emulator: Emulator) -> None:
    emulator.set_faults(hang_rate=1.0, hang_s=60)
    with pytest.raises(TimeoutError):
        await call(emulator, "GET", "/devices", timeout=0.3)
    assert emulator.state()["faults_fired"]["hang"] == 1
    # stop() must not wait out the 60 s hold (the fixture stops it after this test)


async def test_reject_bib_refuses_any_batch_holding_it(any_emulator: Emulator) -> None:
    emu = any_emulator
    _, token = await device_and_session(emu)
    emu.set_faults(reject_bib="13")
    batch = [PASSING, {**PASSING, "num_passing": 2, "bib": "13"}]
    status, payload, _ = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": batch})
    assert status == 400
    assert "13" in unwrap(emu, payload)["description"] and "passings_list[1]" in unwrap(emu, payload)["description"]
    status, _, _ = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]})
    assert status in (200, 201)
    state = emu.state()
    assert state["sessions"][token]["num_passings"] == [1]
    assert state["counts"]["rejected"] == 2 and state["counts"]["inserted"] == 1
    assert state["faults_fired"]["reject_bib"] == 1
    logged = [r for r in state["requests"] if r["path"] == "/v0/passings"]
    assert logged[0]["body"]["passings_list"][1]["bib"] == "13" and logged[0]["status"] == 400


async def test_offline_refuses_connections_then_listens_again_on_the_same_port(emulator: Emulator) -> None:
    port = emulator.api_port
    emulator.set_offline(True)
    with pytest.raises(aiohttp.ClientConnectorError):
        await call(emulator, "GET", "/devices")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    emulator.set_offline(False)
    assert emulator.api_port == port
    assert (await call(emulator, "GET", "/devices"))[0] == 200
    assert emulator.state()["faults"]["offline"] is False


async def test_offline_cuts_open_keep_alive_connections(emulator: Emulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(emulator.base_url + "/devices", headers={"api_key": emulator.api_key}) as resp:
            assert resp.status == 200
        emulator.set_offline(True)
        with pytest.raises(aiohttp.ClientError):
            async with http.get(emulator.base_url + "/devices", headers={"api_key": emulator.api_key}) as resp:
                await resp.read()


DENIED = {"no token": {}, "wrong X-Admin-Token": {"X-Admin-Token": "wrong"},
          "wrong bearer": {"Authorization": "Bearer wrong"}, "empty bearer": {"Authorization": "Bearer "}}  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p in ADMIN_ROUTES])
@pytest.mark.parametrize("headers", DENIED.values(), ids=DENIED.keys())
async def test_every_admin_route_requires_the_token_and_a_refusal_changes_nothing(
    emulator: Emulator, method: str, path: str, headers: dict[str, str]
) -> None:
    _, token = await device_and_session(emulator)
    await call(emulator, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]})
    emulator.set_faults(latency_ms=1)
    before = emulator.state()
    body = {"offline": True, "error_rate": 1} if path == "/faults" else None
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, emulator.admin_url + path, json=body, headers=headers) as resp,
    ):
        assert resp.status == 401
        text = await resp.text()
    assert emulator.admin_token not in text and "sessions" not in text and "latency_ms" not in text
    assert emulator.state() == before  # not reset, no fault switched, nothing counted
    assert (await call(emulator, "GET", f"/passings/session/{token}"))[0] == 200
    # the same request with the token does what it says
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, emulator.admin_url + path, json=body, headers={"X-Admin-Token": emulator.admin_token}
        ) as resp,
    ):
        assert resp.status == 200


async def test_an_unknown_admin_path_is_401_without_the_token(emulator: Emulator) -> None:
    assert (await admin(emulator, "GET", "/secrets", token=None))[0] == 401
    async with aiohttp.ClientSession() as http:
        headers = {"X-Admin-Token": emulator.admin_token}
        async with http.get(emulator.admin_url + "/secrets", headers=headers) as resp:
            assert resp.status == 404


async def test_faults_fired_counts_each_switch_offline(emulator: Emulator) -> None:
    assert "offline" not in emulator.state()["faults_fired"]
    assert (await admin(emulator, "POST", "/faults", {"offline": True}))[0] == 200
    assert (await admin(emulator, "POST", "/faults", {"offline": True}))[0] == 200  # already offline: no switch
    _, state = await admin(emulator, "GET", "/state")
    assert state["faults_fired"]["offline"] == 1
    assert (await admin(emulator, "POST", "/faults", {"offline": False}))[0] == 200
    emulator.set_offline(True)
    emulator.set_offline(False)
    _, state = await admin(emulator, "GET", "/state")
    assert state["faults_fired"]["offline"] == 2 and state["faults"]["offline"] is False


async def test_admin_switches_faults_and_reports_state(any_emulator: Emulator) -> None:
    emu = any_emulator
    _, token = await device_and_session(emu)
    await call(emu, "POST", "/passings", {"token_session": token, "passings_list": [
        {**PASSING, "num_passing": 3}, PASSING, {**PASSING, "num_passing": 2}]})  # fmt: skip
    await call(emu, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]})
    status, state = await admin(emu, "GET", "/state")
    assert status == 200
    assert state["sessions"][token]["num_passings"] == [1, 2, 3]
    assert state["counts"] == {"requests": 4, "inserted": 3, "duplicate": 1, "rejected": 0}
    assert [(r["method"], r["path"], r["status"]) for r in state["requests"]][-2:] == [
        ("POST", "/v0/passings", 201), ("POST", "/v0/passings", 201)]  # fmt: skip
    status, faults = await admin(emu, "POST", "/faults", {"error_rate": 1, "error_status": 502, "offline": True})
    assert status == 200 and faults["error_status"] == 502 and faults["offline"] is True
    with pytest.raises(aiohttp.ClientConnectorError):
        await call(emu, "GET", "/devices")
    status, faults = await admin(emu, "POST", "/faults", {"offline": False, "error_rate": 0})
    assert status == 200 and faults["offline"] is False
    assert (await call(emu, "GET", "/devices"))[0] == 200
    assert (await admin(emu, "POST", "/faults", {"error_rate": 2}))[0] == 400
    status, err = await admin(emu, "POST", "/faults", {"loss": 0.5})
    assert status == 400 and "loss" in err["error"]
    assert (await admin(emu, "POST", "/reset"))[0] == 200
    _, state = await admin(emu, "GET", "/state")
    assert state["sessions"] == {} and state["devices"] == [] and state["counts"]["inserted"] == 0


def test_fault_specs_parse_and_name_the_bad_part() -> None:
    f = Faults.parse("error_rate=0.1,error_status=503,retry_after=1,latency_ms=50,drop_after_commit=0.05,"
                     "hang_rate=0.01,reject_bib=13,offline=true")  # fmt: skip
    assert f == Faults(0.1, 503, 1.0, 50, 0.05, 0.01, 300.0, "13", True)
    for spec, named in [("error_rate=x", "error_rate"), ("error_rate=1.5", "error_rate"), ("nope=1", "nope"),
                        ("error_status=200", "error_status"), ("latency_ms", "latency_ms")]:  # fmt: skip
        with pytest.raises(ValueError, match=named):
            Faults.parse(spec)


async def test_state_persists_across_a_restart_with_db(tmp_path: Path, emulator_factory: Callable[..., Any]) -> None:
    db = str(tmp_path / "cloud.sqlite")
    first = await emulator_factory(db=db)
    _, token = await device_and_session(first)
    await call(first, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]})
    await first.stop()
    second = await emulator_factory(db=db, api_keys=first.keys)
    status, payload, _ = await call(second, "GET", f"/passings/session/{token}")
    assert status == 200 and [p["num_passing"] for p in unwrap(second, payload)["result"]] == [1]
    status, payload, _ = await call(second, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]})
    assert unwrap(second, payload)["duplicate_count"] == 1


async def test_html_page_lists_everything_escaped(emulator: Emulator) -> None:
    _, b, _ = await call(emulator, "POST", "/devices", {"model": "<script>x</script>", "serial_number": "S&1"})
    d = unwrap(emulator, b)["deviceid"]
    _, b, _ = await call(emulator, "POST", "/sessions", {"deviceid": d, "alias": 'Race "A"'})
    token = unwrap(emulator, b)["token_session"]
    await call(emulator, "POST", "/passings", {"token_session": token, "passings_list": [{**PASSING, "bib": "<b>42"}]})
    async with aiohttp.ClientSession() as http, http.get(emulator.page_url) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "S&amp;1" in page and "&lt;b&gt;42" in page and token in page and d in page
    assert emulator.api_key not in page and emulator.admin_token not in page


async def test_unknown_path_and_bad_json_answer_in_the_dialect(any_emulator: Emulator) -> None:
    emu = any_emulator
    status, payload, _ = await call(emu, "GET", "/nothing")
    assert status == 404 and isinstance(unwrap(emu, payload)["description"], str)
    status, payload, _ = await call(emu, "PUT", "/devices")
    assert status == 405 and isinstance(unwrap(emu, payload)["description"], str)
    for path in ("/devices", "/sessions"):
        status, payload, _ = await call(emu, "POST", path, ["not", "an", "object"])
        assert status == 400 and "body" in unwrap(emu, payload)["description"]
    async with (
        aiohttp.ClientSession() as http,
        http.post(emu.base_url + "/passings", data=b"{not json", headers={"api_key": emu.api_key}) as resp,
    ):
        payload = json.loads(await resp.read())
    assert resp.status == 400 and "JSON" in unwrap(emu, payload)["description"]
    logged = emu.state()["requests"][-1]
    assert logged["body"] == "{not json" and logged["status"] == 400


async def test_a_bad_fault_value_changes_nothing(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="offline"):
        emulator.set_faults(error_rate=0.5, offline="maybe")
    with pytest.raises(ValueError, match="hang_rate"):
        emulator.set_faults(offline=True, hang_rate=-1)
    assert emulator.faults == Faults()
    assert (await call(emulator, "GET", "/devices"))[0] == 200


@pytest.mark.parametrize("dialect", ["enveloped", "bare"])
async def test_a_body_over_the_size_limit_is_a_json_413_in_the_dialect(
    dialect: str, emulator_factory: Callable[..., Any]
) -> None:
    emu = await emulator_factory(dialect=dialect, max_body_bytes=2000)
    _, token = await device_and_session(emu)
    batch = [{**PASSING, "num_passing": n, "bib": f"{n:04d}"} for n in range(1, 60)]  # ~3.5 kB
    status, payload, headers = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": batch})
    assert status == 413 and headers["Content-Type"].startswith("application/json")
    if dialect == "enveloped":
        assert set(payload) == {"body"}
    body = unwrap(emu, payload)
    assert set(body) == {"description"} and "2000" in body["description"]
    logged = emu.state()["requests"][-1]
    assert (logged["path"], logged["status"]) == ("/v0/passings", 413)
    # a body under the limit is still read and answered as before
    status, _, _ = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": batch[:5]})
    assert status in (200, 201)
    # the same for any other endpoint's body
    status, payload, _ = await call(emu, "POST", "/devices", {"model": "One4All", "serial_number": "S" * 3000})
    assert status == 413 and unwrap(emu, payload) == body


@pytest.mark.parametrize(("retry_after", "header"), [(1.5, "2"), (0.2, "1"), (0, "0"), (3, "3")])
async def test_retry_after_is_sent_as_whole_seconds_rounded_up(
    emulator: Emulator, retry_after: float, header: str
) -> None:
    # RFC 9110: delay-seconds = 1*DIGIT; rounding up never asks a client to come back too early
    emulator.set_faults(error_rate=1.0, error_status=503, retry_after=retry_after)
    status, _, headers = await call(emulator, "GET", "/devices")
    assert status == 503 and headers["Retry-After"] == header
    assert emulator.faults.retry_after == retry_after  # the fault keeps the value as given


async def test_counts_rejected_is_every_passing_the_api_refused(any_emulator: Emulator) -> None:
    """inserted + duplicate + rejected = every passing of every POST /passings the API itself answered."""
    emu = any_emulator
    d, token = await device_and_session(emu)
    two = [PASSING, {**PASSING, "num_passing": 2}]
    assert (await call(emu, "POST", "/passings", {"token_session": token, "passings_list": two}))[0] in (200, 201)
    await call(emu, "POST", "/sessions", {"deviceid": d})  # closes `token`
    closed = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": two})
    assert closed[0] == 404  # a closed session's refusal counts: those passings were not stored
    unknown = await call(emu, "POST", "/passings", {"token_session": "F" * 64, "passings_list": [PASSING]})
    assert unknown[0] == 404
    bad = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": [{**PASSING, "bib": 1}]})
    assert bad[0] == 400
    stranger = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]}, key="ror-x")
    assert stranger[0] == 401
    emu.set_faults(error_rate=1.0)  # an injected fault is not the API refusing: it is in faults_fired
    assert (await call(emu, "POST", "/passings", {"token_session": token, "passings_list": two}))[0] == 503
    emu.set_faults(error_rate=0.0)
    counts = emu.state()["counts"]
    assert counts == {"requests": 9, "inserted": 2, "duplicate": 0, "rejected": 2 + 1 + 1 + 1}


async def test_state_reports_counts_per_session(any_emulator: Emulator) -> None:
    """Two sessions, each with its own mix of new, duplicate and refused passings, and one request naming no
    session: each session's counts are its own, and the global counts are their sum plus the stray one."""
    emu = any_emulator
    d1, a = await device_and_session(emu)
    _, b, _ = await call(emu, "POST", "/devices", {"model": "One4All", "serial_number": "S2"})
    d2 = unwrap(emu, b)["deviceid"]
    _, b, _ = await call(emu, "POST", "/sessions", {"deviceid": d2})
    bb = unwrap(emu, b)["token_session"]

    def batch(*nums: int, bib: str = "1") -> list[dict[str, Any]]:
        return [{**PASSING, "num_passing": n, "bib": bib} for n in nums]

    async def post(token: str, items: list[dict[str, Any]]) -> int:
        return (await call(emu, "POST", "/passings", {"token_session": token, "passings_list": items}))[0]

    assert await post(a, batch(1, 2, 3)) == 201
    assert await post(a, batch(3, 4)) == 201  # 3 is a duplicate
    assert await post(bb, batch(1, 2)) == 201
    emu.set_faults(reject_bib="13")
    assert await post(bb, [*batch(3), *batch(4, bib="13")]) == 400
    emu.set_faults(reject_bib=None)
    assert await post(bb, batch(2)) == 201
    await call(emu, "POST", "/sessions", {"deviceid": d1})  # closes a
    assert await post(a, batch(5)) == 404
    assert await post("F" * 64, batch(1, 2, 3)) == 404  # no such session: global counts only
    status, state = await admin(emu, "GET", "/state")
    assert status == 200
    sessions = state["sessions"]
    assert sessions[a]["counts"] == {"inserted": 4, "duplicate": 1, "rejected": 1}
    assert sessions[a]["num_passings"] == [1, 2, 3, 4]
    assert sessions[bb]["counts"] == {"inserted": 2, "duplicate": 1, "rejected": 2}
    assert sessions[bb]["num_passings"] == [1, 2]
    [new] = set(sessions) - {a, bb}
    assert sessions[new]["counts"] == {"inserted": 0, "duplicate": 0, "rejected": 0}
    assert state["counts"] == {"requests": 12, "inserted": 6, "duplicate": 2, "rejected": 1 + 2 + 3}
    assert (await admin(emu, "POST", "/reset"))[0] == 200
    _, token = await device_and_session(emu)
    assert await post(token, batch(1)) == 201
    assert emu.state()["sessions"][token]["counts"] == {"inserted": 1, "duplicate": 0, "rejected": 0}
    assert set(emu.session_counts) == {token}  # reset forgot the others' counts


async def test_a_handler_crash_is_a_500_in_the_dialect_and_is_logged(
    any_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = any_emulator
    _, token = await device_and_session(emu)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Store, "devices", broken)
    monkeypatch.setattr(Store, "insert", broken)
    stream = io.StringIO()
    log.configure("debug", stream=stream, json=True)
    # the OpenAPI's 500 is {"body": null}; the prose pages document no 500 body, so bare says what it is
    expected = {"body": None} if emu.dialect == "enveloped" else {"description": "Internal server error"}
    status, payload, headers = await call(emu, "GET", "/devices")
    assert (status, payload) == (500, expected) and headers["Content-Type"].startswith("application/json")
    status, payload, _ = await call(emu, "POST", "/passings", {"token_session": token, "passings_list": [PASSING]})
    assert (status, payload) == (500, expected)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    failed = [e for e in events if e["event"] == "emulator_handler_failed"]
    assert [(e["method"], e["path"], e["level"]) for e in failed] == [
        ("GET", "/v0/devices", "error"), ("POST", "/v0/passings", "error")]  # fmt: skip
    assert failed[0]["error"] == "RuntimeError: disk on fire" and "in _list_devices" in failed[0]["traceback"]
    assert emu.api_key not in stream.getvalue()
    monkeypatch.undo()
    state = emu.state()
    assert [r["status"] for r in state["requests"]][-2:] == [500, 500]
    # a crash is not the API refusing the passings, nor storing them
    assert state["counts"]["rejected"] == 0 and state["sessions"][token]["num_passings"] == []
    assert state["sessions"][token]["counts"] == {"inserted": 0, "duplicate": 0, "rejected": 0}
    assert (await call(emu, "GET", "/devices"))[0] == 200  # the emulator keeps serving


@pytest.mark.parametrize("presented", ["configured", "stranger"])
async def test_a_crash_while_checking_the_key_logs_no_key(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    """A crash inside the key check, where the presented key is a local, logs the stack but no key: neither the
    configured one nor a stranger's (the emulator never registered that one as a secret)."""
    key = emulator.api_key if presented == "configured" else make_key()

    def broken(*_args: Any) -> bool:
        raise RuntimeError("digest unavailable")

    monkeypatch.setattr(server, "hmac", SimpleNamespace(compare_digest=broken))  # the server module's only
    stream = io.StringIO()
    log.configure("debug", stream=stream, json=True)
    status, _, _ = await call(emulator, "GET", "/devices", key=key)
    assert status == 500
    [event] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert event["event"] == "emulator_handler_failed" and "in _authorize" in event["traceback"]
    assert key not in stream.getvalue() and emulator.admin_token not in stream.getvalue()


async def test_the_emulator_keys_and_admin_token_are_scrubbed_from_log_lines(emulator: Emulator) -> None:
    stream = io.StringIO()
    log.configure("debug", stream=stream, json=True)
    get_logger("test").info("careless", note=f"key {emulator.api_key} token {emulator.admin_token}")
    assert emulator.api_key not in stream.getvalue() and emulator.admin_token not in stream.getvalue()
    assert "key *** token ***" in stream.getvalue()
