"""Shared pieces of the end-to-end tests: an emulator with a known key, a CSV reader, polling helpers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from gateway.emulator import Emulator
from tests.fixtures.daemon import Daemon, write_config
from tests.fixtures.emulator import cloud_nums  # noqa: F401 - re-exported for the e2e tests
from tests.fixtures.wait import until  # noqa: F401 - re-exported for the e2e tests

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


def make(tmp_path: Path, emu: Emulator, port: int, **kw: Any) -> Daemon:
    cfg = write_config(
        tmp_path / "gw.toml",
        base_url=emu.base_url,
        api_key=KEY,
        readers=[{"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv"}],
        **kw,
    )
    return Daemon(cfg)


def status_daemon(
    tmp_path: Path, emu: Emulator, port: int, status_port: int, token: str | None = None, **kw: Any
) -> Daemon:
    """`make`'s daemon with the status server on 127.0.0.1:`status_port` (behind `[status] token` if given)."""
    d = make(tmp_path, emu, port, **kw)
    listen = f'listen = "127.0.0.1:{status_port}"' + (f'\ntoken = "{token}"' if token else "")
    d.config.write_text(d.config.read_text().replace('listen = ""', listen))
    return d
