"""Shared pieces of the end-to-end tests: an emulator with a known key, a CSV reader, polling helpers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.emulator import Emulator
from tests.fixtures.daemon import Daemon, write_config

KEY = "ror-00112233445566778899"


def csv_lines(n: int, start: int = 0, bib0: int = 100) -> list[str]:
    # distinct chips, one read each: every line becomes exactly one passing
    return [
        f"{bib0 + i},CHIP{bib0 + i},2026-05-03T09:{(i // 60) % 60:02d}:{i % 60:02d}.250Z"
        for i in range(start, start + n)
    ]


async def cli(*args: str) -> tuple[int, str, str]:
    """Run a rufus-gateway command without blocking the loop (the emulator lives in this loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def send(port: int, lines: list[str]) -> None:
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write("".join(line + "\n" for line in lines).encode())
    await w.drain()
    w.close()
    await w.wait_closed()


def cloud_nums(emu: Emulator) -> dict[str, list[int]]:
    return {tok: s["num_passings"] for tok, s in emu.state()["sessions"].items()}


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def make(tmp_path: Path, emu: Emulator, port: int, **kw: Any) -> Daemon:
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url=emu.base_url,
        api_key=KEY,
        readers=[{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}],
        **kw,
    )
    return Daemon(cfg)
