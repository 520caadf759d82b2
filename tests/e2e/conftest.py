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
    """The emulator, once per dialect. A fixed port and a --db file: a test may stop and start it again (a
    cloud restart) and the gateway finds it where it was, with its state. Its fault dice are seeded: with
    seed 1 the first draw is 0.13, so a fault a test switches on fires at the first request it may hit (a
    random seed once let every request of a run miss a 0.3 hang rate, and the test proved nothing)."""
    emu = Emulator(
        EmulatorConfig(
            dialect=request.param,
            port=free_port(),
            api_keys=[ApiKey.parse(f"{KEY}:READ_WRITE")],
            db=str(tmp_path / "cloud.db"),
            seed=1,
        )
    )
    await emu.start()
    yield emu
    await emu.stop()


@pytest.fixture
async def enveloped(tmp_path: Path) -> AsyncIterator[Emulator]:
    """One dialect only, for what does not depend on it (the crew's commands, the daemon's own mechanics)."""
    emu = Emulator(
        EmulatorConfig(
            port=free_port(), api_keys=[ApiKey.parse(f"{KEY}:READ_WRITE")], db=str(tmp_path / "cloud.db"), seed=1
        )
    )
    await emu.start()
    yield emu
    await emu.stop()
