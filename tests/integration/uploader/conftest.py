"""Uploader/lifecycle fixtures: every test runs against a loopback emulator in both dialects, with a
READ_WRITE key (the one the gateway should have), a WRITE-only key (one that cannot read back) and a READ-only
key (one the cloud refuses every upload with 403)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.emulator import ApiKey, Emulator, EmulatorConfig
from tests.integration.uploader.helpers import R_KEY, RW_KEY, W_KEY, Env, make_env


@pytest.fixture(params=["enveloped", "bare"])
async def cloud(request: pytest.FixtureRequest) -> AsyncIterator[Emulator]:
    keys = [ApiKey(RW_KEY), ApiKey(W_KEY, "WRITE"), ApiKey(R_KEY, "READ")]
    config = EmulatorConfig(dialect=request.param, api_keys=keys, seed=7)
    async with Emulator(config) as emu:
        yield emu


@pytest.fixture
async def env(cloud: Emulator, tmp_path: Path) -> AsyncIterator[Env]:
    e = await make_env(cloud, tmp_path)
    try:
        yield e
    finally:
        await e.client.close()
        await e.outbox.close()
