"""Where the daemon's ingest time goes: py-spy attached to a real `rufus-gateway run` while N csv reads arrive
over one tcp-listen connection (run.py's ingest figure, same daemon config), then the hottest frames.

Run: .venv/bin/python benchmarks/profile_ingest.py [--reads 100000] [--out profile.txt] [--top 25]

Prints reads/s, the frames with the most samples of their own ("self") and including callees ("total"), and
keeps py-spy's collapsed stacks in --out (flamegraph.pl or speedscope read them). Needs ptrace on the daemon
(root, or kernel.yama.ptrace_scope=0). Without --out the run is timed only, with no profiler attached.
"""

from __future__ import annotations

import asyncio
import collections
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _bench import parser
from run import DEFAULT_WINDOW_S, KEY, count, csv_lines, daemon, send, wait_for

from gateway.emulator import ApiKey, Emulator, EmulatorConfig
from tests.fixtures.daemon import free_port

PY_SPY = Path(sys.executable).with_name("py-spy")


def hottest(collapsed: Path, top: int) -> list[str]:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        if not line.strip():
            continue
        stack, n = line.rsplit(" ", 1)
        frames = [re.sub(r" \(/\S*?/(site-packages|python3\.\d+|gateway)/", r" (\1/", f) for f in stack.split(";")]
        samples += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            total[f] += int(n)
    mine = [f"  {100 * c / samples:5.1f}%  {f}" for f, c in total.most_common(200) if "gateway/" in f]
    return [
        f"{samples} samples",
        "self:",
        *(f"  {100 * c / samples:5.1f}%  {f}" for f, c in own.most_common(top)),
        "total (gateway code):",
        *mine[:top],
    ]


async def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--reads", type=int, default=100_000)
    p.add_argument("--out", type=Path, help="py-spy collapsed stacks here (no profiler without it)")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    n = 5_000 if args.quick else args.reads
    with tempfile.TemporaryDirectory(prefix="rufus-profile-", dir=".") as tmp:
        d = Path(tmp)
        emu = Emulator(
            EmulatorConfig(port=free_port(), api_keys=[ApiKey.parse(f"{KEY}:READ_WRITE")], db=str(d / "cloud.db"))
        )
        await emu.start()
        port = free_port()
        dm = daemon(d, emu, port, DEFAULT_WINDOW_S)
        await dm.start()
        spy = None
        try:
            assert dm.proc is not None
            if args.out:
                command = [str(PY_SPY), "record", "-p", str(dm.proc.pid), "-o", str(args.out), "-f", "raw", "-r", "200"]
                spy = await asyncio.create_subprocess_exec(
                    *command, "--nonblocking", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                await asyncio.sleep(1.0)  # attached before the first read
            lines = csv_lines(n)
            t0 = time.perf_counter()
            await send(port, lines)
            t1 = await wait_for(f"{n} reads journaled", lambda: count(dm.db, "SELECT MAX(id) FROM reads") >= n, 600)
            # the whole daemon was at work (derive, upload), not a journal alone: a daemon the cloud refuses
            # would only journal, and measure faster than any real one
            sent = "SELECT COUNT(*) FROM passings WHERE state = 'Sent'"
            t2 = await wait_for(f"{n} passings Sent", lambda: count(dm.db, sent) >= n, 600, poll=0.05)
        finally:
            if spy is not None:
                spy.send_signal(2)  # py-spy writes its file on SIGINT
                await asyncio.wait_for(spy.wait(), 60)
            await dm.terminate()
            await emu.stop()
    print(f"{n} reads journaled in {t1 - t0:.2f} s: {n / (t1 - t0):,.0f} reads/s; all Sent after {t2 - t0:.2f} s")
    if args.out and args.out.exists():
        print("\n".join(hottest(args.out, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
