"""`rufus-gateway emulator` as a user runs it: a real subprocess, its banner, SIGTERM, --db across restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import structlog
from click.testing import CliRunner

from gateway.cli import cli
from gateway.cloud import DeviceBind, RufusClient
from gateway.emulator import Emulator, EmulatorConfig, Faults
from gateway.errors import BadRequestError

KEY = "ror-0123456789abcdef0123"


@asynccontextmanager
async def emulator_process(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, dict[str, str]]]:
    environ = {k: v for k, v in os.environ.items() if k != "RUFUS_EMULATOR_ADMIN_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "emulator", "--port", "0", "--admin-port", "0", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**environ, "NO_COLOR": "1", **(env or {})},
    )  # fmt: skip
    assert proc.stdout is not None
    banner: dict[str, str] = {}
    try:
        while "ready" not in banner:
            line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            if not line:
                err = await proc.stderr.read() if proc.stderr else b""
                raise AssertionError(f"emulator exited early: {err.decode()}")
            name, _, value = line.strip().partition(": ")
            banner[name] = value
        yield proc, banner
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()


async def test_banner_serves_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    async with emulator_process("--dialect", "bare", "--faults", "latency_ms=1") as (proc, banner):
        assert banner["api"].startswith("http://127.0.0.1:") and banner["api"].endswith("/v0")
        assert banner["faults"] == "latency_ms=1" and banner["admin token"]
        key = banner["demo key"].split()[0]
        assert key.startswith("ror-") and len(key) == 24
        async with RufusClient(banner["api"], key) as client:
            d = (await client.bind_device(DeviceBind("One4All", "CLI-1"))).deviceid
            assert (await client.device_info(d)).serial_number == "CLI-1"
        async with aiohttp.ClientSession() as http:
            async with http.get(banner["admin"] + "/state", headers={"X-Admin-Token": banner["admin token"]}) as r:
                state = await r.json()
        assert state["dialect"] == "bare" and state["devices"][0]["deviceid"] == d
        proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
        assert proc.returncode == 0
        assert key not in err.decode() and banner["admin token"] not in err.decode()


async def test_db_survives_a_restart_and_given_keys_are_not_printed(tmp_path: Path) -> None:
    db = str(tmp_path / "cloud.sqlite")
    args = ("--db", db, "--api-key", f"{KEY}:READ_WRITE:unbind", "--admin-token", "tok-123456")
    async with emulator_process(*args) as (proc, banner):
        assert banner["keys"] == "READ_WRITE:unbind" and "admin token" not in banner
        async with RufusClient(banner["api"], KEY) as client:
            d = (await client.bind_device(DeviceBind("One4All", "CLI-2"))).deviceid
        proc.send_signal(signal.SIGINT)
        await proc.communicate()
        assert proc.returncode == 0
    async with emulator_process(*args) as (proc, banner), RufusClient(banner["api"], KEY) as client:
        assert [x.deviceid for x in await client.list_devices()] == [d]


async def _status(url: str, method: str, headers: dict[str, str], body: object = None) -> int:
    async with aiohttp.ClientSession() as http, http.request(method, url, headers=headers, json=body) as resp:
        await resp.read()
        return resp.status


async def test_two_api_keys_are_each_honoured_with_their_access_type_and_the_given_admin_token() -> None:
    read, write = "ror-" + "1" * 20, "ror-" + "2" * 20
    args = ("--api-key", f"{read}:READ", "--api-key", f"{write}:WRITE", "--admin-token", "tok-given-1")
    async with emulator_process(*args) as (_proc, banner):
        assert banner["keys"] == "READ, WRITE" and "admin token" not in banner and "demo key" not in banner
        api, bind = banner["api"], {"model": "One4All", "serial_number": "CLI-K"}
        assert await _status(api + "/devices", "GET", {"api_key": read}) == 200
        assert await _status(api + "/devices", "POST", {"api_key": read}, bind) == 403
        assert await _status(api + "/devices", "POST", {"api_key": write}, bind) == 201
        assert await _status(api + "/devices", "GET", {"api_key": write}) == 403
        assert await _status(api + "/devices", "GET", {"api_key": "ror-" + "3" * 20}) == 401
        state = banner["admin"] + "/state"
        assert await _status(state, "GET", {"Authorization": "Bearer tok-given-1"}) == 200
        assert await _status(state, "GET", {"X-Admin-Token": "tok-given-2"}) == 401


async def test_the_admin_token_can_come_from_the_environment() -> None:
    async with emulator_process(env={"RUFUS_EMULATOR_ADMIN_TOKEN": "tok-from-env"}) as (_proc, banner):
        assert "admin token" not in banner  # given, so not printed
        state = banner["admin"] + "/state"
        assert await _status(state, "GET", {"X-Admin-Token": "tok-from-env"}) == 200
        assert await _status(state, "GET", {}) == 401


async def test_bind_requires_type_option_plays_the_stricter_vendor_page() -> None:
    async with emulator_process("--bind-requires-type") as (_proc, banner):
        key = banner["demo key"].split()[0]
        async with RufusClient(banner["api"], key) as client:
            with pytest.raises(BadRequestError, match="type"):
                await client.bind_device(DeviceBind("One4All", "CLI-3"))
            d = (await client.bind_device(DeviceBind("One4All", "CLI-3", type="One4All"))).deviceid
            assert (await client.device_info(d)).type == "One4All"
        async with aiohttp.ClientSession() as http:
            async with http.get(banner["admin"] + "/state", headers={"X-Admin-Token": banner["admin token"]}) as r:
                assert (await r.json())["bind_requires_type"] is True
    async with emulator_process() as (_proc, banner):  # off by default: type stays optional
        key = banner["demo key"].split()[0]
        async with RufusClient(banner["api"], key) as client:
            assert (await client.bind_device(DeviceBind("One4All", "CLI-4"))).deviceid


@pytest.fixture(autouse=True)
def keep_log_config() -> Iterator[None]:
    # the command configures structlog for its process; in-process runs must not leave it pointing at
    # CliRunner's closed stream
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--faults", "error_rate=2"], "error_rate"),
        (["--faults", "loss=0.1"], "loss"),
        (["--api-key", "k:OWNER"], "OWNER"),
        (["--dialect", "soap"], "soap"),
        (["--port", "70000"], "70000"),
    ],
)
def test_bad_options_exit_2_with_one_line(args: list[str], named: str) -> None:
    result = CliRunner().invoke(cli, ["emulator", *args])
    assert result.exit_code == 2
    assert named in result.output and "Traceback" not in result.output


def _help_blocks(text: str) -> dict[str, str]:
    """Option -> its help, re-joined across click's line wrapping."""
    blocks: dict[str, str] = {}
    name = None
    for line in text.split("Options:", 1)[1].splitlines():
        stripped = line.strip()
        if line.startswith("  -"):
            name = stripped.split()[0].rstrip(",")
            blocks[name] = stripped
        elif name and stripped:
            blocks[name] += " " + stripped
    return blocks


def test_help_lists_every_option_of_the_issue_with_its_default() -> None:
    result = CliRunner().invoke(cli, ["emulator", "--help"])
    assert result.exit_code == 0, result.output
    blocks = _help_blocks(result.output)
    expected = {
        "--host": "127.0.0.1", "--port": "8080", "--db": "in memory", "--dialect": "enveloped",
        "--api-key": "a generated", "--admin-port": "8081", "--admin-token": "generated", "--faults": "none",
    }  # fmt: skip
    for option, default in expected.items():
        assert option in blocks, f"{option} missing from --help"
        assert f"[default: {default}" in blocks[option], f"{option}: {blocks[option]!r}"
    assert "enveloped|bare" in blocks["--dialect"] and "READ_WRITE[:unbind]" in blocks["--api-key"]
    assert "error_rate" in blocks["--faults"]
    # and the options added since: every one states its default
    for option, text in blocks.items():
        if option not in ("-h", "--help"):
            assert "[default: " in text, f"{option}: no default in --help"


def test_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["emulator", "--port", str(port), "--admin-port", "0"])
    assert result.exit_code == 1, result.output
    assert "cannot listen" in result.output and "Traceback" not in result.output
    assert result.output.count("\n") == 1  # one line on stderr, no banner


async def test_starting_offline_then_coming_online() -> None:
    async with Emulator(EmulatorConfig(faults=Faults(offline=True))) as emu:
        async with RufusClient(emu.base_url, emu.api_key) as client:
            with pytest.raises(Exception, match="connection failed"):
                await client.list_devices()
            emu.set_faults(offline="false")
            assert await client.list_devices() == []
