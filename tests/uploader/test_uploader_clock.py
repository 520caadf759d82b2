"""A Pi without RTC boots in the past: the cloud's certificate looks 'not yet valid'. Keep retrying, keep
every passing, and tell the operator it is the clock, not the cloud."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cloud.client import RufusClient, Timeouts
from gateway.uploader import Uploader
from tests.uploader.helpers import RW_KEY, Env, eventually, fast, running

_CA_CONF = """[ca]
default_ca = test
[test]
dir = {dir}
database = $dir/index.txt
serial = $dir/serial
new_certs_dir = $dir
default_md = sha256
policy = any
copy_extensions = copy
[any]
commonName = supplied
"""


@pytest.fixture(scope="module")
def future_cert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A test CA, and a certificate for 127.0.0.1 signed by it that only becomes valid in 2099."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    (d / "index.txt").write_text("")
    (d / "serial").write_text("01\n")
    (d / "ca.cnf").write_text(_CA_CONF.format(dir=d))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=test ca", "-days", "3650")
    run("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1")  # fmt: skip
    run("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", "srv.csr",
        "-out", "future.pem", "-startdate", "20990101000000Z", "-enddate", "20991231000000Z", "-notext")  # fmt: skip
    yield d


async def test_certificate_not_yet_valid_alerts_about_the_clock(
    env: Env, future_cert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(future_cert / "ca.pem"))  # our CA is trusted, as a real one is
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(future_cert / "future.pem", future_cert / "srv.key")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(100)
        except (ssl.SSLError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    await env.add(3)
    tls = RufusClient(f"https://127.0.0.1:{port}/v0", RW_KEY, timeouts=Timeouts(connect=1.0, read=1.0, total=2.0))
    try:
        up = Uploader(env.outbox, tls, fast())
        async with running(up):
            await eventually(lambda: _is(up.status.retries >= 3), what="retries")
            assert (await env.states()) == {"Pending": 3}
        clock = [a for a in up.status.alerts if "clock" in a]
        assert len(clock) == 1  # once, not once per retry
        up.update_client(env.client)  # the clock is fixed (NTP came up): same rows go to the real cloud
        async with running(up):
            await eventually(lambda: _sent(env, 3), what="3 Sent")
    finally:
        await tls.close()
        server.close()
        await server.wait_closed()


async def _is(value: bool) -> bool:
    return value


async def _sent(env: Env, n: int) -> bool:
    return (await env.states()).get("Sent", 0) == n
