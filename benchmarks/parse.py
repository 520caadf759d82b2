"""Parser throughput per reader format: framer + conversation (what the ingest runs per socket read) against
the least work any parser must do, splitting the bytes on the terminator and decoding each record.

The capture for each format is what the simulator's reader side sends for a simulated race (greeting, then
one `reader_conversation().encode(read)` per read), fed to the gateway side in 4 KiB chunks as a socket
would deliver it. Every read must come back (a benchmark that parsed nothing would be fast): the script
stops with an error if a single read is rejected or missing.

    ratio = parser time / baseline time over the same bytes (how many times the minimum the parser costs)

Each figure is the best of several repetitions (as timeit does): the least disturbed by other processes.

Run: .venv/bin/python benchmarks/parse.py [--quick] [--format NAME ...]
"""

from __future__ import annotations

import math
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import emit, machine, parser, peak_rss_mb, quiet_logs, ratio

from gateway import formats
from gateway.formats.base import Format, ParseContext, Rejected
from gateway.model import Read
from gateway.simulator.race import Race, chip_style_for

START = datetime(2026, 5, 3, 9, 0, tzinfo=UTC)
CHUNK = 4096


def capture(fmt: Format, reads: list[Read], ctx: ParseContext) -> bytes:
    rc = fmt.reader_conversation(ctx)
    return rc.greeting() + b"".join(rc.encode(r) for r in reads)


def terminator(fmt: Format, ctx: ParseContext, read: Read) -> bytes:
    """The byte a record ends with: `$` for MYLAPS, the line feed for the line formats (CR LF or LF)."""
    sample = fmt.format(read, ctx)
    return b"\n" if sample.endswith(b"\n") else sample[-1:]


def gateway_side(fmt: Format, data: bytes, ctx: ParseContext) -> tuple[int, int, int]:
    """Framer + conversation over `data` in socket-sized chunks: (records, reads, rejected)."""
    framer = fmt.framer()
    conv = fmt.conversation(ctx)
    records = reads = rejected = 0
    for i in range(0, len(data), CHUNK):
        for record in framer.feed(data[i : i + CHUNK]):
            records += 1
            for result in conv.on_record(record)[0]:
                if isinstance(result, Read):
                    reads += 1
                elif isinstance(result, Rejected):
                    rejected += 1
    for record in framer.flush():
        records += 1
        rejected += sum(1 for r in conv.on_record(record)[0] if isinstance(r, Rejected))
    return records, reads, rejected


def baseline(data: bytes, term: bytes) -> int:
    """The floor: split on the terminator and decode each record (no chunking, no fields, no validation)."""
    return len([part.decode("ascii") for part in data.split(term) if part])


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - t, result


def bench(name: str, runners: int, repeats: int) -> dict[str, Any]:
    fmt = formats.get(name)
    reads = Race.generate(runners, seed=11, start=START, chip_style=chip_style_for(name))
    ctx = ParseContext(tz=UTC, now=reads[-1].timestamp + timedelta(minutes=1), reader="finish")
    data = capture(fmt, reads, ctx)
    term = terminator(fmt, ctx, reads[0])
    # Interleaved, best of each (as timeit takes the best): both sides see the same machine, and a scheduler
    # hiccup during the few milliseconds the floor takes cannot decide the ratio.
    t_parse = t_base = math.inf
    for _ in range(repeats):
        t, (records, got, rejected) = timed(gateway_side, fmt, data, ctx)
        if rejected or got != len(reads):
            raise SystemExit(f"parse benchmark {name}: {got} of {len(reads)} reads parsed, {rejected} rejected")
        t_parse = min(t_parse, t)
        for _ in range(5):
            t, base_records = timed(baseline, data, term)
            t_base = min(t_base, t)
    return {
        "reads": len(reads),
        "bytes": len(data),
        "records": records,
        "records_per_s": round(records / t_parse, 1),
        "mb_per_s": round(len(data) / t_parse / 1e6, 2),
        "baseline_records_per_s": round(base_records / t_base, 1),
        "ratio": ratio(t_parse, t_base),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument(
        "--format",
        dest="names",
        action="append",
        choices=formats.names(),
        help="only this format (repeatable; default: all)",
    )
    args = p.parse_args()
    quiet_logs()
    runners, repeats = (300, 2) if args.quick else (6_000, 5)
    results = {name: bench(name, runners, repeats) for name in (args.names or formats.names())}

    print(f"{'format':<13}{'reads':>8}{'records/s':>12}{'MB/s':>7}{'baseline rec/s':>16}{'cost x':>8}")
    for name, r in results.items():
        print(
            f"{name:<13}{r['reads']:>8}{r['records_per_s']:>12.0f}{r['mb_per_s']:>7.2f}"
            f"{r['baseline_records_per_s']:>16.0f}{r['ratio']:>8.1f}"
        )
    ratios = [r["ratio"] for r in results.values()]
    worst = max(results, key=lambda n: results[n]["ratio"])
    emit(
        {
            "benchmark": "parse",
            "quick": args.quick,
            "formats": results,
            "ratio": round(math.exp(sum(math.log(x) for x in ratios) / len(ratios)), 3),  # geometric mean
            "worst_format": worst,
            "worst_ratio": results[worst]["ratio"],
            "min_records_per_s": min(r["records_per_s"] for r in results.values()),
            "peak_rss_mb": peak_rss_mb(),
            **machine(),
        }
    )


if __name__ == "__main__":
    main()
