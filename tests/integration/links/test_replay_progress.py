"""`replay` shows a progress bar (issue 3): the library reports every byte it sends, and the command draws the
bar on a terminal, full at the end (and stays plain text when stderr is not a terminal)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway import formats
from gateway.capture import CaptureWriter, Entry
from gateway.formats.base import ParseContext
from gateway.model import Read
from gateway.recorder import load_entries, replay

CSV = formats.get("csv")
CTX = ParseContext(reader="rec")
T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _capture(path: Path, n: int) -> list[Entry]:
    with path.open("w", encoding="ascii") as f:
        out = CaptureWriter(f, format="csv", source="test")
        for i in range(n):
            read = Read(chip=f"05800000{i:04d}", bib=str(100 + i), timestamp=T0 + timedelta(seconds=i))
            out.write(CSV.format(read, CTX), T0 + timedelta(milliseconds=20 * i))
    return load_entries(path)


class Gateway:
    """A gateway the replayer connects to: it reads one connection to the end."""

    def __init__(self) -> None:
        self.got = bytearray()
        self.done = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                self.got += data
            w.close()
            self.done.set()

        self.server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        return f"tcp://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_replay_reports_each_entry_sent_up_to_the_total(tmp_path: Path) -> None:
    entries = _capture(tmp_path / "race.cap", 9)
    total = sum(len(e.data) for e in entries)
    gateway = Gateway()
    url = await gateway.start()
    calls: list[int] = []
    try:
        sent = await asyncio.wait_for(replay(entries, url, speed=0, progress=calls.append), 5)
        await asyncio.wait_for(gateway.done.wait(), 5)
    finally:
        await gateway.close()
    assert calls == [len(e.data) for e in entries]  # one report per entry, as it goes out
    assert sum(calls) == sent == total == len(gateway.got)  # the bar reaches the total, and no further


async def _replay_cli(capture: Path, url: str, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "replay",
        str(capture),
        "--to",
        url,
        "--speed",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**clean, "COLUMNS": "100", **env},
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_replay_command_draws_a_full_bar_on_a_terminal(tmp_path: Path) -> None:
    cap = tmp_path / "race.cap"
    total = sum(len(e.data) for e in _capture(cap, 12))
    gateway = Gateway()
    url = await gateway.start()
    try:
        # rich's Console(stderr=True) in the command: TTY_COMPATIBLE=1 makes it treat the pipe as a terminal
        code, err = await _replay_cli(cap, url, TTY_COMPATIBLE="1", TERM="xterm", NO_COLOR="1")
        await asyncio.wait_for(gateway.done.wait(), 5)
    finally:
        await gateway.close()
    assert code == 0, err
    assert len(gateway.got) == total
    frames = [ANSI.sub("", piece).strip() for piece in re.split(r"[\r\n]", err)]
    bars = [f for f in frames if f.startswith("replay") and f"/{total} bytes" in f]
    assert bars, err  # the bar was drawn...
    assert f"{total}/{total} bytes" in bars[-1] and "━" in bars[-1], bars[-1]  # ...and its last frame is full
    assert f"replayed 12 lines, {total} bytes" in err


async def test_replay_command_has_no_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    cap = tmp_path / "race.cap"
    total = sum(len(e.data) for e in _capture(cap, 3))
    gateway = Gateway()
    url = await gateway.start()
    try:
        code, err = await _replay_cli(cap, url, TTY_COMPATIBLE="0")
        await asyncio.wait_for(gateway.done.wait(), 5)
    finally:
        await gateway.close()
    assert code == 0, err
    assert "━" not in err and "\x1b[" not in err  # a log file gets no bar frames
    assert err.strip().splitlines()[-1] == f"replayed 3 lines, {total} bytes from {cap} to {url}"
