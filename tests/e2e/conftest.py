"""Fixtures of the end-to-end tests: the emulator as the cloud, with the key the daemons are given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.emulator import ApiKey, Emulator, EmulatorConfig
from tests.e2e.support import KEY
from tests.fixtures.daemon import free_port


@pytest.fixture(params=["enveloped", "bare"])
async def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(
        EmulatorConfig(
            dialect=request.param, api_keys=[ApiKey.parse(f"{KEY}:READ_WRITE")], db=str(tmp_path / "cloud.db")
        )
    )
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def enveloped(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(
        EmulatorConfig(port=free_port(), api_keys=[ApiKey.parse(f"{KEY}:READ_WRITE")], db=str(tmp_path / "cloud.db"))
    )
    await emu.start()
    yield emu
    await emu.stop()
