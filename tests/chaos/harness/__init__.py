"""The reliability harness: a set checker over (reader truth, gateway database, cloud) (checker.py, evidence.py),
the real daemon and timer as subprocesses (processes.py), and the supervisor that crash-loops them
(supervisor.py). Shared by tests/chaos (bounded CI profile) and benchmarks/chaos.py (the long profile); it is
test code, so it lives here and not in the package every Pi installs.

This module holds the small helpers the chaos tests share: an emulated cloud in this process, the real daemon
as a subprocess, a wait, and the verdict."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from gateway.emulator.config import ApiKey, EmulatorConfig
from gateway.emulator.server import Emulator
from tests.chaos.harness.checker import Report, Truth, check, cloud_from_rows, snapshot_db
from tests.chaos.harness.processes import GatewayProcess, write_gateway_config
from tests.chaos.harness.supervisor import API_KEY, secret_leaks
from tests.fixtures.ports import free_port  # noqa: F401 - re-exported for the tests here
from tests.fixtures.wait import until  # noqa: F401 - re-exported for the tests here

ADMIN_TOKEN = "chaos-admin-token-0001"


@asynccontextmanager
async def cloud(tmp_path: Path, **faults: Any) -> AsyncIterator[Emulator]:
    emu = Emulator(
        EmulatorConfig(api_keys=[ApiKey(API_KEY)], db=str(tmp_path / "cloud.db"), seed=3, admin_token=ADMIN_TOKEN)
    )
    await emu.start()
    try:
        if faults:
            emu.set_faults(**faults)
        yield emu
    finally:
        await emu.stop()


@asynccontextmanager
async def daemon(
    tmp_path: Path, emu: Emulator, readers: list[dict[str, Any]], *, db: Path | None = None, **sections: Any
) -> AsyncIterator[GatewayProcess]:
    """A configured (not yet started) daemon; killed on the way out whatever happened."""
    db = db or tmp_path / "gateway.db"
    config = write_gateway_config(
        tmp_path / "gateway.toml", base_url=emu.base_url, api_key="", db=db, readers=readers, **sections
    )
    gw = GatewayProcess(config, db, env={"RUFUS_API_KEY": API_KEY})
    try:
        yield gw
    finally:
        await gw.kill()


def settled(gw: GatewayProcess) -> bool:
    pending = gw.query("SELECT COUNT(*) FROM passings WHERE state = 'Pending'")[0][0]
    top = gw.query("SELECT COALESCE(MAX(id), 0) FROM reads")[0][0]
    cursor = gw.query("SELECT value FROM meta WHERE key = 'pipeline.cursor'")
    # a duplicate window still open holds its passing back (first and strongest alike) until it closes
    held = gw.query("SELECT COUNT(*) FROM dedup WHERE state LIKE '%\"window\"%'")[0][0]
    return pending == 0 and held == 0 and bool(cursor) and int(cursor[0][0]) >= top


def verdict(gw: GatewayProcess, emu: Emulator, truth: Truth | None = None, **kw: Any) -> Report:
    """The checker over a stopped daemon's database and the emulator's store, plus a grep for the key."""
    assert emu.store is not None
    rows: list[dict[str, Any]] = []
    for s in emu.store.all_sessions():
        rows += emu.store.passings_of(s["token_session"], 1 << 30)
    report = check(snapshot_db(gw.db), cloud_from_rows(rows), truth, **kw)
    leaks = secret_leaks(gw.config.parent, API_KEY)
    report.figures["secret_leaks"] = len(leaks)
    if leaks:
        report.figures["ok"] = False
        report.details["secret_leaks"] = leaks
    (gw.config.parent / "figures.json").write_text(report.json_line() + "\n")
    return report
