"""Journal throughput: the JournalWriter's group commit against one transaction per read.

Every read the gateway takes is committed to SQLite (WAL, synchronous=FULL) before the reader is acknowledged,
so each transaction costs one fsync of the WAL. The baseline is what a naive gateway does: one
`BEGIN IMMEDIATE; INSERT; COMMIT` per read, sequentially (`Store.journal` with one read per call) on the same
schema and pragmas. The group-commit path is `gateway.store.JournalWriter` with several links submitting at
once, each waiting for its read to be durable before sending the next, exactly as the ingest does.

Scenarios (each on a fresh database file in a temporary directory on the disk the gateway would use):
  naive          one transaction per read, one submitter
  group 4x1      4 links, one read per submission (a reader trickling one record per socket read)
  group 4x1 linger5ms  the same with a 5 ms linger timer (the old default), kept to show why there is none
  group 4x16     4 links, 16 reads per submission (a finish burst: one socket read holds many records)
  group 64x1     64 concurrent one-read submissions (the coalescing's upper bound)
The short runs (naive, 4x1, 4x1 linger5ms) go round-robin twice and keep their best; the last group run
is the large one whose peak RSS is reported.

Run: .venv/bin/python benchmarks/journal.py [--quick] [--dir PATH]
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import emit, machine, parser, peak_rss_mb, percentile, quiet_logs, ratio

from gateway.model import Read
from gateway.simulator.race import Race
from gateway.store import JournalWriter, Store

START = datetime(2026, 5, 3, 9, 0, tzinfo=UTC)


@dataclass
class Run:
    name: str
    reads: int = 0
    seconds: float = 0.0
    transactions: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds from submit to durable, per submission

    @property
    def reads_per_s(self) -> float:
        return self.reads / self.seconds if self.seconds > 0 else 0.0

    def summary(self, baseline: Run | None) -> dict[str, Any]:
        return {
            "reads": self.reads,
            "reads_per_s": round(self.reads_per_s, 1),
            "ratio": ratio(self.reads_per_s, baseline.reads_per_s) if baseline else 1.0,
            "txn_per_read": round(self.transactions / self.reads, 4) if self.reads else 0.0,
            "latency_p50_ms": round(percentile(self.latencies, 50) * 1000, 2),
            "latency_p99_ms": round(percentile(self.latencies, 99) * 1000, 2),
        }


def race_reads(n: int) -> list[Read]:
    """At least n simulator reads (about 5 per runner), trimmed to n; seq numbers stay unique."""
    reads = Race.generate(n // 4 + 10, seed=7, start=START)
    while len(reads) < n:  # a too-small field: top up from a second race with later sequence numbers
        more = Race.generate(n // 4 + 10, seed=len(reads), start=START)
        reads += [dataclasses.replace(r, seq=(r.seq or 0) + len(reads)) for r in more]
    return reads[:n]


async def _stored(outbox: Store, expected: int, name: str) -> None:
    got = (await outbox.stats()).reads
    if got != expected:
        raise SystemExit(f"journal benchmark {name}: {got} reads stored, expected {expected}")


async def naive(db: Path, reads: list[Read]) -> Run:
    run = Run("naive", reads=len(reads), transactions=len(reads))
    outbox = await Store.open(db)
    try:
        t0 = time.perf_counter()
        for read in reads:
            t = time.perf_counter()
            await outbox.journal("finish", [read])
            run.latencies.append(time.perf_counter() - t)
        run.seconds = time.perf_counter() - t0
        await _stored(outbox, len(reads), run.name)
    finally:
        await outbox.close()
    return run


async def grouped(db: Path, reads: list[Read], *, links: int, per_submit: int, max_delay: float | None) -> Run:
    name = f"group {links}x{per_submit}" + (f" linger{max_delay * 1000:g}ms" if max_delay else "")
    run = Run(name, reads=len(reads))
    outbox = await Store.open(db)
    writer = JournalWriter(outbox) if max_delay is None else JournalWriter(outbox, max_delay=max_delay)
    task = asyncio.create_task(writer.run(), name="journal-writer")

    async def link(i: int) -> None:
        mine = reads[i::links]
        for k in range(0, len(mine), per_submit):
            t = time.perf_counter()
            await writer.journal(f"link{i}", mine[k : k + per_submit])
            run.latencies.append(time.perf_counter() - t)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(link(i) for i in range(links)))
        run.seconds = time.perf_counter() - t0
        run.transactions = writer.batches
        if writer.committed != len(reads):
            raise SystemExit(f"journal benchmark {name}: writer committed {writer.committed} of {len(reads)}")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await _stored(outbox, len(reads), name)
        finally:
            await outbox.close()
    return run


def fsync_ms(directory: Path, count: int) -> float:
    """Median cost of one 4 KiB write + fsync on this disk: the unit the journal's throughput is made of."""
    path = directory / "fsync.probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    times = []
    try:
        for i in range(count):
            os.pwrite(fd, b"x" * 4096, (i % 16) * 4096)
            t = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        path.unlink()
    return round(percentile(times, 50) * 1000, 3)


async def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the database files go (default: a temporary directory under the current one, "
        "i.e. on the same disk as the project, not a RAM-backed /tmp)",
    )
    args = p.parse_args()
    quiet_logs()
    small, large, rounds = (200, 1_000, 1) if args.quick else (3_000, 60_000, 2)
    reads_small = race_reads(small)
    reads_large = race_reads(large)
    rss_before = peak_rss_mb()
    with tempfile.TemporaryDirectory(prefix="bench-journal-", dir=args.dir or Path.cwd()) as tmp:
        d = Path(tmp)
        disk_fsync = fsync_ms(d, 20 if args.quick else 200)
        # The short runs go round-robin, twice, each on a fresh file, keeping each one's best: the naive path and
        # the group commit then see the same machine (other processes share these cores), not one a busy moment.
        best: dict[str, Run] = {}
        for rnd in range(rounds):
            for run in (
                await naive(d / f"naive{rnd}.db", reads_small),
                await grouped(d / f"g4x1_{rnd}.db", reads_small, links=4, per_submit=1, max_delay=None),
                await grouped(d / f"g4x1n{rnd}.db", reads_small, links=4, per_submit=1, max_delay=0.005),
            ):
                if run.name not in best or run.reads_per_s > best[run.name].reads_per_s:
                    best[run.name] = run
        base, *runs = best.values()
        runs += [
            await grouped(d / "g64x1.db", reads_large[: len(reads_large) // 4], links=64, per_submit=1, max_delay=None),
            await grouped(d / "g4x16.db", reads_large, links=4, per_submit=16, max_delay=None),
        ]
    rss_after = peak_rss_mb()

    print(f"disk: one 4 KiB write+fsync takes {disk_fsync} ms (median)")
    print(f"{'scenario':<20}{'reads':>8}{'reads/s':>11}{'x naive':>9}{'txn/read':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for r in [base, *runs]:
        s = r.summary(base)
        print(
            f"{r.name:<20}{s['reads']:>8}{s['reads_per_s']:>11.1f}{s['ratio']:>9.2f}{s['txn_per_read']:>10.4f}"
            f"{s['latency_p50_ms']:>9.2f}{s['latency_p99_ms']:>9.2f}"
        )
    print(f"peak RSS {rss_after} MB ({rss_before} MB before the runs, with the reads generated)")

    headline = runs[0].summary(base)  # the brief's shape: 4 links, each read submitted on its own
    emit(
        {
            "benchmark": "journal",
            "quick": args.quick,
            "fsync_ms": disk_fsync,
            "naive_reads_per_s": round(base.reads_per_s, 1),
            "group_reads_per_s": headline["reads_per_s"],
            "ratio": headline["ratio"],
            "naive_txn_per_read": 1.0,
            "group_txn_per_read": headline["txn_per_read"],
            "group_latency_p50_ms": headline["latency_p50_ms"],
            "group_latency_p99_ms": headline["latency_p99_ms"],
            "naive_latency_p50_ms": base.summary(None)["latency_p50_ms"],
            "scenarios": {r.name: r.summary(base) for r in runs},
            "peak_rss_mb": rss_after,
            "rss_before_runs_mb": rss_before,
            "large_run_reads": runs[-1].reads,
            **machine(),
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
