"""A WRITE-only key (no GET): the running daemon says once, at start, which safety checks it cannot make, and
uploads all the same."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.emulator import ApiKey, Emulator, EmulatorConfig
from gateway.lifecycle import READ_CHECKS
from tests.e2e.support import KEY, cloud_nums, csv_lines, make, send, until
from tests.fixtures.daemon import free_port

ANNOUNCED = (
    "API key may not read (403 on a GET): uploading continues, these safety checks are off; use a READ_WRITE key"
)


@pytest.fixture
async def write_only(tmp_path: Path) -> AsyncIterator[Emulator]:
    emu = Emulator(EmulatorConfig(port=free_port(), api_keys=[ApiKey.parse(f"{KEY}:WRITE")]))
    await emu.start()
    yield emu
    await emu.stop()


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


async def test_write_only_key_is_announced_once_at_start_and_uploads_still_work(
    tmp_path: Path, write_only: Emulator
) -> None:
    port = free_port()
    d = make(tmp_path, write_only, port)
    await d.start()
    try:
        # before a single read: the announcement comes from the start-up, not from a failed check later
        await until(lambda: any(e["event"] == ANNOUNCED for e in _json_lines(d.output())), what="the announcement")
        assert write_only.state()["counts"]["inserted"] == 0
        await send(port, csv_lines(5))
        await until(lambda: d.count("Sent") == 5, what="5 Sent")
        [(token, nums)] = cloud_nums(write_only).items()
        assert nums == [1, 2, 3, 4, 5]
        assert d.query("select token_session from passings group by 1") == [(token,)]
        # the cloud did refuse the reads: a GET was tried and answered 403
        assert any(r["method"] == "GET" and r["status"] == 403 for r in write_only.requests)
        assert await d.terminate() == 0
    finally:
        await d.kill()
    entries = _json_lines(d.output())
    [line] = [e for e in entries if e["event"] == ANNOUNCED]
    assert line["level"] == "warning"
    assert line["checks_off"] == list(READ_CHECKS)
    named = " | ".join(line["checks_off"])
    for check in ("duplicate read-back", "session adoption floor", "closed-session read-back", "reconcile"):
        assert check in named
    # said once, in one line: no other line repeats it or reports a refused read as an error
    assert sum("may not read" in e["event"] for e in entries) == 1
    assert not [e for e in entries if e.get("level") == "error"]
    assert KEY not in d.output()
