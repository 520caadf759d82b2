"""The finish-line surfaces of the running daemon: /status.json, /metrics, /healthz, the page."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
from aiohttp.test_utils import make_mocked_request

from gateway.emulator import Emulator
from gateway.status.server import StatusServer, safe_url
from tests.e2e.support import KEY, cloud_nums, csv_lines, send, status_daemon, until
from tests.fixtures.daemon import free_port


async def test_status_json_metrics_healthz_and_page_show_the_run_without_the_key(
    tmp_path: Path, enveloped: Emulator
) -> None:
    port, status_port = free_port(), free_port()
    d = status_daemon(tmp_path, enveloped, port, status_port)
    await d.start()
    try:
        await send(port, [*csv_lines(12), "this is not a read"])
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 12, what="12 in the cloud")
        base = f"http://127.0.0.1:{status_port}"
        async with aiohttp.ClientSession() as http:
            status: dict[str, Any] = {}

            async def all_sent_shown() -> bool:  # outbox figures are cached for up to 2 s
                nonlocal status
                async with http.get(f"{base}/status.json") as r:
                    assert r.status == 200
                    status = await r.json()
                return bool(status["outbox"]) and status["outbox"]["sent"] == 12

            await until(all_sent_shown, 10, "12 sent on /status.json", lambda: str(status))
            assert status["phase"] == "running"
            assert status["outbox"]["sent"] == 12 and status["outbox"]["pending"] == 0
            [reader] = status["readers"]
            assert reader["name"] == "finish" and reader["reads"] == 12 and reader["rejected"] == 1
            assert status["token_session"] and status["uploader"]["state"] in ("idle", "sending")
            async with http.get(f"{base}/metrics") as r:
                metrics = await r.text()
            assert 'rufus_gateway_outbox_passings{state="sent"} 12.0' in metrics
            assert 'rufus_gateway_reader_rejected_lines_total{reader="finish"} 1.0' in metrics
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200 and (await r.json())["ok"] is True
            async with http.get(f"{base}/") as r:
                page = await r.text()
            assert 'EventSource("events")' in page
            for text in (str(status), metrics, page):
                assert KEY not in text
    finally:
        await d.kill()


async def test_unmapped_chips_and_link_times_on_all_three_surfaces(tmp_path: Path, enveloped: Emulator) -> None:
    port, status_port = free_port(), free_port()
    d = status_daemon(tmp_path, enveloped, port, status_port)
    await d.start()
    try:
        before = time.time()
        # chips without a bib and no chip map: sent with bib = the normalised chip, and flagged
        await send(
            port,
            [
                "17,E200017,2026-05-03T09:00:00.250Z",
                ",00E2000A1,2026-05-03T09:00:01.250Z",
                ",e2000b2,2026-05-03T09:00:02.250Z",
            ],
        )
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 3, what="3 in the cloud")
        base = f"http://127.0.0.1:{status_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/status.json") as r:
                status: dict[str, Any] = await r.json()
            async with http.get(f"{base}/metrics") as r:
                metrics = await r.text()
            async with http.get(f"{base}/") as r:
                page = await r.text()
        # /status.json
        assert status["pipeline"]["unmapped_chips"] == ["E2000A1", "E2000B2"]
        assert status["pipeline"]["unmapped_count"] == 2
        [reader] = status["readers"]
        assert before - 1 <= reader["last_byte_at"] <= time.time() and reader["since"] > 0
        # /metrics
        assert "rufus_gateway_unmapped_chips 2.0" in metrics
        [line] = [
            x
            for x in metrics.splitlines()
            if x.startswith('rufus_gateway_reader_last_byte_timestamp_seconds{reader="finish"}')
        ]
        assert before - 1 <= float(line.split()[-1]) <= time.time()
        assert 'rufus_gateway_reader_state_since_timestamp_seconds{reader="finish"}' in metrics
        # the page: rendered in the browser from /status.json, so it must read and show those fields
        for needle in (
            'id="unmapped"',
            'id="unmapped-count"',
            "unmapped_chips",
            "last_byte_at",
            "x.since",
            "last byte",
            "since ",
        ):
            assert needle in page, needle
    finally:
        await d.kill()


def _request_from(ip: str, path: str = "/status.json", headers: dict[str, str] | None = None) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (ip, 5555) if name == "peername" else default
    return make_mocked_request("GET", path, headers=headers or {}, transport=transport)


async def _guarded(server: StatusServer, request: Any) -> int:
    async def ok(_request: Any) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="ok")

    response = await server._guard(request, ok)
    return response.status


async def test_non_local_clients_need_the_status_token() -> None:
    gw = mock.Mock()
    with_token = StatusServer(gw, "0.0.0.0:0", token="s3cret-status")
    no_token = StatusServer(gw, "0.0.0.0:0", token=None)
    assert await _guarded(with_token, _request_from("127.0.0.1")) == 200
    assert await _guarded(with_token, _request_from("::1")) == 200
    assert await _guarded(with_token, _request_from("192.0.2.7")) == 401
    assert await _guarded(with_token, _request_from("192.0.2.7", headers={"X-Status-Token": "wrong"})) == 401
    assert await _guarded(with_token, _request_from("192.0.2.7", headers={"X-Status-Token": "s3cret-status"})) == 200
    assert await _guarded(with_token, _request_from("192.0.2.7", path="/status.json?token=s3cret-status")) == 200
    assert await _guarded(no_token, _request_from("192.0.2.7", headers={"X-Status-Token": ""})) == 401


def test_reader_urls_lose_their_credentials() -> None:
    assert safe_url("tcp://user:pw@10.0.0.5:3601") == "tcp://10.0.0.5:3601"
    assert safe_url("/dev/serial/by-id/usb-FTDI") == "/dev/serial/by-id/usb-FTDI"


def _keys(value: Any, prefix: str = "") -> set[str]:
    """Every leaf key of a snapshot: `a.b` for objects, `a[].b` for lists of objects. Maps keyed by a name
    the crew chose (a reader, a line kind) are leaves themselves."""
    if isinstance(value, dict) and prefix not in _NAMED_MAPS:
        out: set[str] = set()
        for k, v in value.items():
            out |= _keys(v, f"{prefix}.{k}" if prefix else k)
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return set().union(*(_keys(v, prefix + "[]") for v in value))
    return {prefix}


_NAMED_MAPS = {"clock.reader_skew_s", "readers[].skipped_kinds"}
README = Path(__file__).resolve().parents[2] / "README.md"


async def test_readme_documents_every_key_of_status_json(tmp_path: Path, enveloped: Emulator) -> None:
    port, status_port = free_port(), free_port()
    d = status_daemon(tmp_path, enveloped, port, status_port)
    await d.start()
    try:
        await send(port, [*csv_lines(3), "junk"])
        await until(lambda: sum(len(v) for v in cloud_nums(enveloped).values()) == 3, what="3 in the cloud")
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{status_port}/status.json") as r:
            status = await r.json()
    finally:
        await d.kill()
    assert status["uploader"] and status["pipeline"] and status["journal"] and status["outbox"]  # all filled in
    text = README.read_text()
    schema = text[text.index("### /status.json schema") :]
    schema = schema[: schema.index("\n## ")] if "\n## " in schema else schema
    keys = _keys(status)
    assert {"readers[].reads", "uploader.state", "pack_up.ok", "clock.synced", "disk.free_mb"} <= keys
    missing = sorted(k for k in keys if f"`{k}`" not in schema)
    assert not missing, f"README.md's /status.json schema lacks {missing}"
