"""A Pi without RTC boots in the past: the cloud's certificate looks 'not yet valid'. Keep retrying, keep
every passing, and tell the operator it is the clock, not the cloud."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from gateway.cloud.client import RufusClient, Timeouts
from gateway.uploader import Uploader
from tests.integration.uploader.helpers import RW_KEY, Env, eventually, fast, running


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
