"""Upload throughput: the Uploader's batches of 500 against one request per passing, on loopback.

Both runs are the real path: `gateway.uploader.Uploader` takes Pending rows from a `Store` file, counts the
attempt, POSTs them with `RufusClient` to the in-process RUFUS emulator (`gateway.emulator.Emulator`, on
127.0.0.1, its store in memory) and marks them Sent on the 2xx. Only `batch_size` differs: 500 (the
default) against 1, which is what a gateway without batching does. A run ends when every passing is Sent,
and the emulator must then hold exactly that many distinct num_passings (checked: a run that lost or doubled
passings stops with an error instead of printing a figure).

The second pair repeats both with the emulator's `latency_ms` fault (default 20 ms before every answer), the
round trip a 4G link adds: there one request per passing is bound by latency, not by CPU.

The emulator runs in the same process and event loop as the uploader, so on loopback both share the CPU:
the absolute figures are a floor; the ratio is the point.

Run: .venv/bin/python benchmarks/upload.py [--quick] [--latency-ms 20]
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import emit, machine, parser, peak_rss_mb, quiet_logs, ratio

from gateway.cloud.client import RufusClient, Timeouts
from gateway.cloud.models import DeviceBind, SessionCreate
from gateway.emulator import ApiKey, Emulator, EmulatorConfig
from gateway.store import NewPassing, Store
from gateway.uploader import Uploader, UploaderSettings

T0 = datetime(2026, 5, 3, 9, 0, tzinfo=UTC)


@dataclass
class Run:
    name: str
    batch_size: int
    latency_ms: int
    passings: int
    seconds: float = 0.0
    requests: int = 0

    @property
    def per_s(self) -> float:
        return self.passings / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "passings": self.passings,
            "passings_per_s": round(self.per_s, 1),
            "requests": self.requests,
            "batch_size": self.batch_size,
            "latency_ms": self.latency_ms,
            "seconds": round(self.seconds, 3),
        }


async def one_run(emu: Emulator, key: str, db: Path, run: Run) -> Run:
    emu.set_faults(latency_ms=run.latency_ms)
    client = RufusClient(emu.base_url, key, timeouts=Timeouts(connect=2.0, read=10.0, total=15.0))
    outbox = await Store.open(db)
    try:
        deviceid = (await client.bind_device(DeviceBind("One4All", f"SN-BENCH-{db.stem}"))).deviceid
        token = (await client.create_session(SessionCreate(deviceid, run.name))).token_session
        await outbox.set_meta("deviceid", deviceid)
        await outbox.set_current_session(token, alias=run.name, deviceid=deviceid, created_by_us=True)
        for first in range(0, run.passings, 5000):
            count = min(5000, run.passings - first)
            await outbox.add_passings(
                token,
                [
                    NewPassing(
                        timestamp=T0 + timedelta(milliseconds=37 * i),
                        bib=str(1 + i % 4000),
                        chip=f"{58000000000 + i % 4000:012d}",
                        timezone="Europe/Berlin",
                    )
                    for i in range(first, first + count)
                ],
            )
        uploader = Uploader(outbox, client, UploaderSettings(batch_size=run.batch_size, linger_s=0.0))
        requests_before = client.requests
        t0 = time.perf_counter()
        task = asyncio.create_task(uploader.run(), name="uploader")
        try:
            while uploader.status.passings_sent < run.passings:
                if task.done():
                    task.result()
                    raise SystemExit(f"upload benchmark {run.name}: the uploader stopped")
                await asyncio.sleep(0.002)
            run.seconds = time.perf_counter() - t0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        run.requests = client.requests - requests_before
        assert emu.store is not None
        held = emu.store.num_passings(token)
        if sorted(held) != list(range(1, run.passings + 1)):
            raise SystemExit(
                f"upload benchmark {run.name}: the emulator holds {len(held)} passings "
                f"({len(set(held))} distinct), expected 1..{run.passings}"
            )
        if uploader.status.state in ("auth_failed", "session_closed") or uploader.status.rejected:
            raise SystemExit(f"upload benchmark {run.name}: uploader ended in {uploader.status.state}")
    finally:
        await outbox.close()
        await client.close()
    return run


async def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--latency-ms",
        type=int,
        default=20,
        help="round trip added by the emulator in the second pair of runs (0: skip them)",
    )
    p.add_argument("--dir", type=Path, default=None, help="where the outbox files go (default: under the cwd)")
    args = p.parse_args()
    quiet_logs()
    # sizes chosen so each run lasts a few seconds on 2 cores; the one-per-request runs are the slow ones
    n_batched, n_single, n_single_latency = (1_000, 60, 20) if args.quick else (20_000, 1_500, 150)
    key = "ror-" + secrets.token_hex(10)
    emu = Emulator(EmulatorConfig(api_keys=[ApiKey(key, "READ_WRITE", unbind=True)], seed=1))
    await emu.start()
    runs: list[Run] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-upload-", dir=args.dir or Path.cwd()) as tmp:
            d = Path(tmp)
            plan = [Run("batched", 500, 0, n_batched), Run("one per request", 1, 0, n_single)]
            if args.latency_ms > 0:
                plan += [
                    Run(f"batched +{args.latency_ms}ms", 500, args.latency_ms, n_batched),
                    Run(f"one per request +{args.latency_ms}ms", 1, args.latency_ms, n_single_latency),
                ]
            for i, run in enumerate(plan):
                runs.append(await one_run(emu, key, d / f"outbox{i}.db", run))
    finally:
        await emu.stop()

    print(f"{'run':<28}{'passings':>9}{'requests':>10}{'seconds':>9}{'passings/s':>12}")
    for r in runs:
        print(f"{r.name:<28}{r.passings:>9}{r.requests:>10}{r.seconds:>9.2f}{r.per_s:>12.1f}")
    figures: dict[str, Any] = {
        "benchmark": "upload",
        "quick": args.quick,
        "batched_passings_per_s": round(runs[0].per_s, 1),
        "single_passings_per_s": round(runs[1].per_s, 1),
        "ratio": ratio(runs[0].per_s, runs[1].per_s),
        "runs": {r.name: r.summary() for r in runs},
        "peak_rss_mb": peak_rss_mb(),
        **machine(),
    }
    if len(runs) == 4:
        figures |= {
            "latency_ms": args.latency_ms,
            "batched_latency_passings_per_s": round(runs[2].per_s, 1),
            "single_latency_passings_per_s": round(runs[3].per_s, 1),
            "latency_ratio": ratio(runs[2].per_s, runs[3].per_s),
        }
    print(
        f"batched / one per request: {figures['ratio']}x on loopback"
        + (f", {figures['latency_ratio']}x with {args.latency_ms} ms round trips" if len(runs) == 4 else "")
    )
    emit(figures)


if __name__ == "__main__":
    asyncio.run(main())
