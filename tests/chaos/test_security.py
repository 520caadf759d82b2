"""Secrets and trust: the API key appears in no output of any kind, the emulator's admin port wants its token,
and nothing in the gateway turns TLS verification off."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.chaos.harness import ADMIN_TOKEN, cloud, daemon, free_port, settled, until
from tests.chaos.harness.supervisor import API_KEY, secret_leaks

pytestmark = pytest.mark.chaos

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"


# Every way Python, ssl, aiohttp or requests/httpx can be told not to check a certificate or a host name.
TLS_OFF = re.compile(
    r"ssl\s*=\s*False|verify_ssl|verify\s*=\s*False|CERT_NONE|CERT_OPTIONAL|verify_mode"
    r"|check_hostname\s*=\s*False|_create_unverified_context|PYTHONHTTPSVERIFY"
)


@pytest.mark.parametrize("line", [
    "connector = aiohttp.TCPConnector(ssl=False)",
    "session.get(url, verify_ssl=False)",
    "httpx.AsyncClient(verify=False)",
    "requests.get(url, verify = False)",
    "ctx.verify_mode = ssl.CERT_NONE",
    "ctx.verify_mode = ssl.CERT_OPTIONAL",
    "ctx.check_hostname = False",
    "ctx = ssl._create_unverified_context()",
])  # fmt: skip
def test_the_tls_grep_sees_each_way_of_turning_verification_off(line: str) -> None:
    assert TLS_OFF.search(line), line


def test_nothing_disables_tls_verification() -> None:
    pattern = TLS_OFF
    hits = [
        f"{path.relative_to(GATEWAY.parent)}:{no}: {line.strip()}"
        for path in sorted(GATEWAY.rglob("*.py"))
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert sorted(GATEWAY.rglob("*.py")), "the gateway package was not found"
    assert hits == []


async def test_emulator_admin_port_refuses_without_its_token(tmp_path: Path) -> None:
    async with cloud(tmp_path) as emu, aiohttp.ClientSession() as http:
        admin = emu.admin_url
        denied = [{}, {"X-Admin-Token": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}]
        for headers in denied:
            for method, path in (("GET", "/state"), ("GET", "/faults"), ("POST", "/faults"), ("POST", "/reset")):
                body = {"offline": True} if path == "/faults" else None
                async with http.request(method, admin + path, headers=headers, json=body) as resp:
                    assert resp.status == 401, (method, path, headers)
                    assert ADMIN_TOKEN not in await resp.text()
        assert emu.faults.offline is False, "a refused request changed nothing"
        async with http.get(emu.base_url + "/devices", headers={"api_key": API_KEY}) as resp:
            assert resp.status == 200
        for headers in ({"X-Admin-Token": ADMIN_TOKEN}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
            async with http.get(admin + "/state", headers=headers) as resp:
                assert resp.status == 200 and "sessions" in await resp.json()


async def _cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


async def test_api_key_in_no_log_error_or_export(tmp_path: Path) -> None:
    """The key in the config file (the one place it may be), a daemon the cloud refuses (401), a malformed
    key, the crew's read-only commands: every byte they print or leave behind is searched for it."""
    port = free_port()
    out_dir = tmp_path / "outputs"
    out_dir.mkdir()
    async with (
        cloud(tmp_path) as emu,
        daemon(tmp_path, emu, [{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}]) as gw,
    ):
        wrong = "ror-" + "bad0" * 5  # well-formed, unknown to the cloud: 401 on every call
        gw.env = {"RUFUS_API_KEY": wrong}
        await gw.start()
        await gw.wait_ready()
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"1,CHIP1,2026-11-22T10:00:00.000Z\n")
        await w.drain()
        await until(lambda: gw.query("SELECT COUNT(*) FROM reads")[0][0] == 1, 15, "the read journaled", gw.tail)
        await until(lambda: "401" in gw.tail(100_000) or "auth" in gw.tail(100_000).lower(), 15, "the refusal")
        assert await gw.terminate() == 0, gw.tail()
        assert wrong not in gw.tail(100_000), "the refused key itself must not be logged either"

        gw.env = {"RUFUS_API_KEY": API_KEY}
        await gw.start()
        await gw.wait_ready()
        await until(lambda: settled(gw), 20, "the passing sent", gw.tail)
        w.close()
        assert await gw.terminate() == 0, gw.tail()

        config = gw.config
        results = [
            await _cli("outbox", "stats", "--config", str(config), "--json"),
            await _cli("outbox", "list", "--config", str(config)),
            await _cli("outbox", "export", "--config", str(config), "--format", "json", "--table", "sessions"),
            await _cli("outbox", "export", "--config", str(config), "--format", "csv", "--table", "reads"),
            await _cli("run", "--config", str(config), "--check"),
        ]
        bad = tmp_path / "bad.toml"
        bad.write_text(config.read_text() + f'\n[extra]\napi_key = "{API_KEY}"\n')
        results.append(await _cli("run", "--config", str(bad)))
        malformed = tmp_path / "malformed.toml"
        malformed.write_text(config.read_text().replace("[cloud]\n", f'[cloud]\napi_key = "{API_KEY}x"\n', 1))
        results.append(await _cli("run", "--config", str(malformed)))
        assert results[-1][0] == 78 and results[-2][0] == 78, results[-2:]
        for i, (_, text) in enumerate(results):
            (out_dir / f"cli-{i}.txt").write_text(text)
        bad.unlink()
        malformed.unlink()
    leaks = secret_leaks(tmp_path, API_KEY)
    assert leaks == [], leaks
    assert len(list(out_dir.iterdir())) == len(results) and gw.starts == 2


def _own_address() -> str | None:
    """A non-loopback address of this machine (no packet is sent), or None on a loopback-only host."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))
        except OSError:
            return None
        address: str = s.getsockname()[0]
    return None if address.startswith("127.") else address


async def test_status_surfaces_hold_no_key_and_want_a_token_from_afar(tmp_path: Path) -> None:
    port, status_port = free_port(), free_port()
    token = "status-token-0123"
    async with (
        cloud(tmp_path) as emu,
        daemon(
            tmp_path,
            emu,
            [{"name": "mat", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}],
            status={"listen": f"0.0.0.0:{status_port}", "token": token},
        ) as gw,
        aiohttp.ClientSession() as http,
    ):
        await gw.start()
        await gw.wait_ready()
        _r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"1,CHIP1,2026-11-22T10:00:00.000Z\n")
        await w.drain()
        await until(lambda: settled(gw) and gw.query("SELECT COUNT(*) FROM reads")[0][0] == 1, 20, "one passing")
        w.close()
        pages = {}
        for path in ("/", "/status.json", "/metrics", "/healthz"):
            async with http.get(f"http://127.0.0.1:{status_port}{path}") as resp:
                assert resp.status in (200, 503), (path, resp.status)  # healthz may say "degraded"
                pages[path] = await resp.text()
        for path, text in pages.items():
            assert API_KEY not in text and token not in text, path
            (tmp_path / f"status{path.replace('/', '_')}.txt").write_text(text)
        remote = _own_address()
        if remote is not None:  # a phone on the finish-line Wi-Fi, as far as the server can tell
            async with http.get(f"http://{remote}:{status_port}/status.json") as resp:
                assert resp.status == 401
            async with http.get(f"http://{remote}:{status_port}/status.json", headers={"X-Status-Token": token}) as r:
                assert r.status == 200 and API_KEY not in await r.text()
        assert await gw.terminate() == 0, gw.tail()
    assert secret_leaks(tmp_path, API_KEY) == []
