"""Client behaviour the emulator cannot show: a fake server for odd answers (non-JSON 2xx, Retry-After
as an HTTP-date, paging by has_more, a stale session `last`), raw sockets that reset, TLS failures
(including a certificate that is not yet valid), and the API key kept out of errors, reprs and logs."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import select
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web

from gateway import log
from gateway.cloud import Closed, DeviceBind, RufusClient, SessionCreate, SessionCreated, Timeouts, Unbound
from gateway.cloud.client import parse_retry_after
from gateway.errors import AuthError, BadRequestError, CloudError, NotFoundError, RetryableError
from tests.fixtures.emulator import make_key

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]
HEX = "A" * 64


class FakeCloud:
    """A loopback server whose answers each test scripts per (method, path)."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Answer] = {}
        self.seen: list[web.Request] = []
        self.peers: list[Any] = []
        self.bodies: list[bytes] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        self.bodies.append(await request.read())
        answer = self.answers.get((request.method, request.path))
        if answer is None:
            return web.json_response({"description": "no script"}, status=599)
        return await answer(request)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCloud]:
    cloud = FakeCloud()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", cloud.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    cloud.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v0"
    yield cloud
    await runner.cleanup()


def answer(status: int, body: Any = None, *, text: str | None = None, headers: dict[str, str] | None = None) -> Answer:
    async def respond(_request: web.Request) -> web.StreamResponse:
        if text is not None:
            return web.Response(status=status, text=text, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return respond


async def test_non_json_2xx_is_retryable(fake: FakeCloud) -> None:
    fake.answers[("GET", f"/v0/devices/{HEX}")] = answer(200, text="<html>captive portal</html>")
    fake.answers[("POST", "/v0/passings")] = answer(201, text="")
    async with RufusClient(fake.url, make_key()) as client:
        with pytest.raises(RetryableError, match="not JSON") as err:
            await client.device_info(HEX)
        assert err.value.status == 200
        with pytest.raises(RetryableError):
            await client.insert_passings(HEX, [])


async def test_2xx_without_the_promised_fields_is_retryable(fake: FakeCloud) -> None:
    fake.answers[("POST", "/v0/devices")] = answer(201, {"description": "Device binded succesfully"})
    fake.answers[("GET", f"/v0/sessions/{HEX}")] = answer(200, {"body": {"result": [{"alias": "x"}]}})
    async with RufusClient(fake.url, make_key()) as client:
        with pytest.raises(RetryableError, match="deviceid"):
            await client.bind_device(DeviceBind("m", "s"))
        with pytest.raises(RetryableError, match="token_session"):
            await client.session_info(HEX)


async def test_retry_after_seconds_and_http_date(fake: FakeCloud) -> None:
    later = formatdate(time.time() + 120, usegmt=True)
    fake.answers[("GET", "/v0/devices")] = answer(429, {"description": "slow down"}, headers={"Retry-After": later})
    fake.answers[("GET", f"/v0/devices/{HEX}")] = answer(503, None, headers={"Retry-After": "17"})
    fake.answers[("DELETE", f"/v0/devices/{HEX}")] = answer(408, {"body": None}, headers={"Retry-After": "soon"})
    async with RufusClient(fake.url, make_key()) as client:
        with pytest.raises(RetryableError) as err:
            await client.list_devices()
        assert err.value.status == 429 and err.value.retry_after is not None
        assert 100 < err.value.retry_after <= 121 and err.value.description == "slow down"
        with pytest.raises(RetryableError) as err:
            await client.device_info(HEX)
        assert (err.value.status, err.value.retry_after) == (503, 17.0)
        with pytest.raises(RetryableError) as err:
            await client.unbind_device(HEX)
        assert (err.value.status, err.value.retry_after) == (408, None)


def test_parse_retry_after() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now) == pytest.approx(30.0)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now) == 0.0  # already past: go now
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("tomorrow", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None


async def test_other_statuses_map_onto_the_tree(fake: FakeCloud) -> None:
    fake.answers[("GET", "/v0/devices")] = answer(418, {"description": "teapot"})
    fake.answers[("POST", "/v0/sessions")] = answer(400, {"body": {"description": "deviceid: required field missing"}})
    fake.answers[("GET", f"/v0/sessions/device/{HEX}/active")] = answer(
        404, {"description": "Device not found", "deviceid": HEX}
    )
    fake.answers[("GET", f"/v0/sessions/device/{HEX}")] = answer(403, {"description": "Forbidden"})
    async with RufusClient(fake.url, make_key()) as client:
        with pytest.raises(CloudError) as err:
            await client.list_devices()
        assert type(err.value) is CloudError and err.value.status == 418
        with pytest.raises(BadRequestError) as bad:
            await client.create_session(SessionCreate(HEX))
        assert bad.value.description == "deviceid: required field missing"
        with pytest.raises(NotFoundError):  # an unknown device is not "no active session"
            await client.active_session(HEX)
        with pytest.raises(AuthError):
            await client.device_sessions(HEX)


async def test_requests_carry_the_key_header_json_and_reuse_one_connection(fake: FakeCloud) -> None:
    fake.answers[("POST", "/v0/sessions")] = answer(201, {"body": {"description": "ok", "token_session": HEX}})
    key = make_key()
    async with RufusClient(fake.url, key, key_header="x-api-key") as client:
        for _ in range(3):
            assert await client.create_session(SessionCreate(HEX, alias="A")) == SessionCreated(HEX, "ok")
    assert all(r.headers["x-api-key"] == key and "api_key" not in r.headers for r in fake.seen)
    assert all(r.headers["Content-Type"] == "application/json" for r in fake.seen)
    assert [json.loads(b) for b in fake.bodies] == [{"deviceid": HEX, "alias": "A"}] * 3
    assert len(set(fake.peers)) == 1  # keep-alive: one TCP connection for all three calls


async def test_list_devices_pages_until_has_more_is_false(fake: FakeCloud) -> None:
    async def pages(request: web.Request) -> web.Response:
        page = int(request.query["page"])
        assert request.query["limit"] == "5000"
        items = [{"deviceid": f"{page}{i:063d}"} for i in range(2)]
        pagination = {"page": page, "limit": 5000, "total": 6, "has_more": page < 3}
        return web.json_response({"description": "Success", "result": items, "pagination": pagination})

    fake.answers[("GET", "/v0/devices")] = pages
    async with RufusClient(fake.url, make_key()) as client:
        devices = await client.list_devices()
    assert [d.deviceid[0] for d in devices] == ["1", "1", "2", "2", "3", "3"]


@pytest.mark.parametrize("last", [50, "2026-05-01T09:00:00.000Z", None])
async def test_max_num_passing_checks_the_session_last_hint(fake: FakeCloud, last: Any) -> None:
    """`last` that is stale (50 while the session holds up to 12), not a number, or absent: page the session."""
    held = [3, 7, 12]

    async def session_passings(request: web.Request) -> web.Response:
        first = int(request.query.get("first", 0))
        base = {"token_session": HEX, "deviceid": HEX, "timestamp": "2026-05-01T09:00:00.000Z", "latitude": "0.0"}
        rows = [{**base, "num_passing": n, "bib": str(n), "longitude": ""} for n in held if n >= first]
        if not rows or request.query["page"] != "1":
            return web.json_response({"body": {"description": "Passings not found"}}, status=404)
        return web.json_response({"body": {"description": "Success", "result": rows}})

    fake.answers[("GET", f"/v0/sessions/{HEX}")] = answer(
        200, {"result": [{"token_session": HEX, "active": "true", "passings": "3", "last": last}]}
    )
    fake.answers[("GET", f"/v0/passings/session/{HEX}")] = session_passings
    async with RufusClient(fake.url, make_key()) as client:
        assert await client.max_num_passing(HEX) == 12
        rows = await client.session_passings(HEX)
    assert rows[0].latitude == 0.0 and rows[0].longitude is None


async def test_connection_reset_and_refused_are_retryable() -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(10)
        writer.transport.abort()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with RufusClient(f"http://127.0.0.1:{port}/v0", make_key()) as client:
            with pytest.raises(RetryableError, match="connection failed"):
                await client.list_devices()
    finally:
        server.close()
        await server.wait_closed()
    async with RufusClient(f"http://127.0.0.1:{port}/v0", make_key(), timeouts=Timeouts(connect=1)) as client:
        with pytest.raises(RetryableError, match="connection failed"):
            await client.list_devices()


# -- TLS ---------------------------------------------------------------------------------------------


async def _tls_server(certs: Path) -> tuple[asyncio.Server, int]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / "future.pem", certs / "srv.key")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(100)
        except (ssl.SSLError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    return server, server.sockets[0].getsockname()[1]


async def test_tls_certificate_not_yet_valid_flags_the_clock(
    future_cert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(future_cert / "ca.pem"))  # trust our CA, as a real CA is trusted
    server, port = await _tls_server(future_cert)
    try:
        async with RufusClient(f"https://127.0.0.1:{port}/v0", make_key()) as client:
            with pytest.raises(RetryableError) as err:
                await client.list_devices()
        assert err.value.clock_suspect is True and "not yet valid" in str(err.value) and "clock" in str(err.value)
    finally:
        server.close()
        await server.wait_closed()


async def test_tls_untrusted_certificate_is_retryable_without_clock_flag(
    future_cert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(future_cert / "nothing.pem"))  # verification stays on: nothing trusted
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    server, port = await _tls_server(future_cert)
    try:
        async with RufusClient(f"https://127.0.0.1:{port}/v0", make_key()) as client:
            with pytest.raises(RetryableError, match="TLS") as err:
                await client.list_devices()
        assert err.value.clock_suspect is False
    finally:
        server.close()
        await server.wait_closed()


# -- the key stays secret ------------------------------------------------------------------------------


async def test_key_never_in_errors_repr_or_logs(fake: FakeCloud) -> None:
    key = make_key()

    async def echo_key(request: web.Request) -> web.Response:
        # a careless server that quotes the key back in its error text
        return web.json_response({"description": f"bad key {request.headers.get('api_key')}"}, status=401)

    fake.answers[("GET", "/v0/devices")] = echo_key
    fake.answers[("GET", f"/v0/devices/{HEX}")] = answer(500, {"description": f"trace: api_key={key}"})
    stream = io.StringIO()
    saved = structlog.get_config()
    log.configure("debug", stream=stream, json=True)
    try:
        client = RufusClient(fake.url, key)
        errors: list[BaseException] = []
        async with client:
            for call in (client.list_devices(), client.device_info(HEX), client.session_info(HEX)):
                try:
                    await call
                except CloudError as exc:
                    errors.append(exc)
        assert len(errors) == 3
        for exc in errors:
            assert key not in str(exc) and key not in repr(exc) and key not in str(getattr(exc, "description", ""))
        assert key not in repr(client) and fake.url in repr(client)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 3 and all("cloud_request_failed" in line for line in lines)
        assert key not in stream.getvalue()
    finally:
        structlog.configure(**saved)


@pytest.mark.parametrize("base_url", ["http:///v0", "notaurl/v0"])
async def test_a_malformed_base_url_is_not_retried_forever(base_url: str) -> None:
    async with RufusClient(base_url, make_key()) as client:
        with pytest.raises(CloudError, match="base_url") as err:
            await client.list_devices()
    assert not isinstance(err.value, RetryableError)


async def test_redirects_are_not_followed_so_the_key_goes_nowhere_else(fake: FakeCloud) -> None:
    fake.answers[("GET", "/v0/devices")] = answer(302, {}, headers={"Location": fake.url + "/portal"})
    fake.answers[("GET", "/v0/portal")] = answer(200, {"description": "Success", "result": []})
    async with RufusClient(fake.url, make_key()) as client:
        with pytest.raises(RetryableError, match="redirect") as err:
            await client.list_devices()
    assert err.value.status == 302
    assert [r.path for r in fake.seen] == ["/v0/devices"]


async def test_unbind_and_close_answered_204_or_without_echo_still_say_which(fake: FakeCloud) -> None:
    fake.answers[("DELETE", f"/v0/devices/{HEX}")] = answer(204, text="")
    fake.answers[("PATCH", f"/v0/sessions/close/{HEX}")] = answer(200, {"description": "Session closed succesfully"})
    async with RufusClient(fake.url, make_key()) as client:
        assert await client.unbind_device(HEX) == Unbound(HEX, None)
        assert await client.close_session(HEX) == Closed(HEX, "Session closed succesfully")


async def test_the_default_key_header_is_api_key_only(fake: FakeCloud) -> None:
    fake.answers[("GET", "/v0/devices")] = answer(200, {"description": "Success", "result": []})
    key = make_key()
    async with RufusClient(fake.url, key) as client:
        await client.list_devices()
    [request] = fake.seen
    assert request.headers["api_key"] == key and "x-api-key" not in request.headers


@pytest.mark.parametrize(
    ("line", "header", "other"),
    [("", "api_key", "x-api-key"), ('api_key_header = "x-api-key"', "x-api-key", "api_key")],
)
async def test_the_client_built_from_config_uses_the_configured_key_header(
    fake: FakeCloud, tmp_path: Path, line: str, header: str, other: str
) -> None:
    from gateway import config
    from gateway.service import make_client

    fake.answers[("GET", "/v0/devices")] = answer(200, {"description": "Success", "result": []})
    key = make_key()
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[cloud]\nbase_url = "{fake.url}"\napi_key = "{key}"\n{line}\n')
    settings = config.load(cfg, environ={})
    async with make_client(settings.cloud) as client:
        await client.list_devices()
    [request] = fake.seen
    assert request.headers[header] == key and other not in request.headers


def _passing_rows(first: int, count: int) -> list[dict[str, Any]]:
    base = {"token_session": HEX, "deviceid": HEX, "timestamp": "2026-05-01T09:00:00.000Z"}
    return [{**base, "num_passing": n, "bib": str(n)} for n in range(first, first + count)]


@pytest.mark.parametrize("envelope", [False, True], ids=["bare", "enveloped"])
async def test_a_full_page_then_passings_not_found_ends_the_list(fake: FakeCloud, envelope: bool) -> None:
    def wrap(obj: dict[str, Any]) -> dict[str, Any]:
        return {"body": obj} if envelope else obj

    async def pages(request: web.Request) -> web.Response:
        if request.query["page"] == "1":
            return web.json_response(wrap({"description": "Success", "result": _passing_rows(1, 5000)}))
        return web.json_response(wrap({"description": "Passings not found"}), status=404)

    fake.answers[("GET", f"/v0/passings/session/{HEX}")] = pages
    fake.answers[("GET", f"/v0/passings/device/{HEX}")] = pages
    async with RufusClient(fake.url, make_key()) as client:
        assert len(await client.session_passings(HEX)) == 5000
        assert [r.query["page"] for r in fake.seen] == ["1", "2"]
        assert len(await client.device_passings(HEX)) == 5000
    assert len(fake.seen) == 4


@pytest.mark.parametrize("wording", ["Session not found", "Device not found", None])
async def test_another_404_on_a_later_page_raises_instead_of_ending_the_list(
    fake: FakeCloud, wording: str | None
) -> None:
    """The session was unbound between page 1 and page 2 (or a proxy answers a bare 404): the 5000 rows read so
    far are not the whole session, so they must not come back as if they were."""

    async def pages(request: web.Request) -> web.Response:
        if request.query["page"] == "1":
            return web.json_response({"description": "Success", "result": _passing_rows(1, 5000)})
        if wording is None:
            return web.Response(status=404, text="Not Found")
        return web.json_response({"body": {"description": wording, "token_session": HEX}}, status=404)

    fake.answers[("GET", f"/v0/passings/session/{HEX}")] = pages
    async with RufusClient(fake.url, make_key()) as client:
        with pytest.raises(NotFoundError) as err:
            await client.session_passings(HEX)
    assert err.value.description == wording and len(fake.seen) == 2


@pytest.mark.parametrize(("sizes", "expected"), [((5000, 3), 5003), ((2,), 2), ((5000, 0), 5000)])
async def test_list_devices_without_pagination_pages_until_a_short_page(
    fake: FakeCloud, sizes: tuple[int, ...], expected: int
) -> None:
    """No `pagination` object: a full page (5000) means ask again, a short one is the last."""

    async def pages(request: web.Request) -> web.Response:
        page = int(request.query["page"])
        items = [{"deviceid": f"{page}{i:063d}"} for i in range(sizes[page - 1])]
        return web.json_response({"body": {"description": "Success", "result": items}})

    fake.answers[("GET", "/v0/devices")] = pages
    async with RufusClient(fake.url, make_key()) as client:
        devices = await client.list_devices()
    assert len(devices) == expected and len({d.deviceid for d in devices}) == expected
    assert [r.query["page"] for r in fake.seen] == [str(n) for n in range(1, len(sizes) + 1)]


@pytest.mark.parametrize(
    ("body", "empty"),
    [
        ({"description": "Devices not found"}, True),
        ({"body": {"description": "Device not found"}}, True),
        ({"description": "Not Found"}, False),  # a proxy or a wrong base_url, not the API
        (None, False),
    ],
)
async def test_list_devices_404(fake: FakeCloud, body: Any, empty: bool) -> None:
    fake.answers[("GET", "/v0/devices")] = answer(404, body)
    async with RufusClient(fake.url, make_key()) as client:
        if empty:
            assert await client.list_devices() == []
        else:
            with pytest.raises(NotFoundError):
                await client.list_devices()


async def test_list_devices_404_after_a_full_page_keeps_the_first_page(fake: FakeCloud) -> None:
    async def pages(request: web.Request) -> web.Response:
        if request.query["page"] == "1":
            items = [{"deviceid": f"{i:064d}"} for i in range(5000)]
            return web.json_response({"description": "Success", "result": items})
        return web.json_response({"description": "Devices not found"}, status=404)

    fake.answers[("GET", "/v0/devices")] = pages
    async with RufusClient(fake.url, make_key()) as client:
        assert len(await client.list_devices()) == 5000
    assert len(fake.seen) == 2


# -- timeouts ----------------------------------------------------------------------------------------


async def test_total_timeout_stops_a_server_that_trickles_a_byte_every_tenth_of_a_second() -> None:
    """Each byte arrives well inside the read timeout, so only the total one can end this request."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b" " * 30  # 3 s of trickle, then a body that is not JSON: a missing total timeout fails the test
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n")
        try:
            for byte in body:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        timeouts = Timeouts(connect=1.0, read=5.0, total=0.5)
        async with RufusClient(f"http://127.0.0.1:{port}/v0", make_key(), timeouts=timeouts) as client:
            started = time.monotonic()
            with pytest.raises(RetryableError, match=r"timed out \(no complete answer within the total 0.5 s\)") as err:
                await client.list_devices()
            elapsed = time.monotonic() - started
        assert 0.4 < elapsed < 1.0, elapsed
        assert err.value.status is None
    finally:
        server.close()
        await server.wait_closed()


async def test_connect_timeout_when_the_handshake_never_completes() -> None:
    """A listener whose accept queue is full (backlog 0, never accepting) drops further SYNs: the connect hangs,
    as towards a host that has gone from the network, without needing any network."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers: list[socket.socket] = []
        try:
            while True:  # fill the queue until a connect is left pending
                assert len(fillers) < 8, "the kernel kept accepting handshakes on a full backlog"
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    filler.connect(("127.0.0.1", port))
                _, writable, _ = select.select([], [filler], [], 0.1)
                if not writable:
                    break
            timeouts = Timeouts(connect=0.2, read=5.0, total=5.0)
            async with RufusClient(f"http://127.0.0.1:{port}/v0", make_key(), timeouts=timeouts) as client:
                started = time.monotonic()
                with pytest.raises(RetryableError, match=r"connect timed out \(no connection within 0.2 s\)"):
                    await client.list_devices()
                elapsed = time.monotonic() - started
            assert 0.15 < elapsed < 1.0, elapsed
        finally:
            for filler in fillers:
                filler.close()
