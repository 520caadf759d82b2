"""The gateway's performance goals, measured on this machine, each against a baseline taken in the same run.

  ingest     reads over loopback tcp-listen:// through a real `rufus-gateway run` (parse, journal, dedup,
             outbox commit, synchronous=FULL), one connection, against the ceiling: raw sqlite3 executemany
             of the same rows in one transaction with the same pragmas. Each is the median of --ingest-runs
             bursts (3; the JSON's ingest_runs lists them all).
  drain      Pending passings to Sent by the Uploader (benchmarks/upload.py's run) against one POST per
             passing with a new connection each (how existing RUFUS integrations upload), emulator on loopback.
  latency    read received to Sent at a steady rate, with the duplicate window at 0 and at its default.
  recovery   after an outage with N pending: the cloud's first 2xx (first passing Sent) to zero pending.
  footprint  peak RSS of `run` with --rows rows already in the database while ingesting and uploading, and
             its start-to-READY time with that database: after a clean stop (the goal), and after a SIGKILL,
             where the integrity check of the whole file runs before READY (reported, no goal).
  parsers    lines/s of each format's parser on its simulator's output (benchmarks/parse.py's bench).

Prints a table, then ONE JSON line. Exit 0; with --strict, exit 1 when a goal is missed.

Run: .venv/bin/python benchmarks/run.py [--quick] [--strict] [--ingest N] [--ingest-runs N] [--drain N] ...
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # tests.fixtures.daemon: the real daemon as a subprocess (test code)

from _bench import emit, machine, parser, peak_rss_mb, percentile, quiet_logs, ratio
from parse import bench as parse_bench
from rich.console import Console
from rich.table import Table
from upload import Run as UploadRun
from upload import one_run

from gateway import formats
from gateway.cloud.client import RufusClient, Timeouts
from gateway.cloud.models import DeviceBind, SessionCreate
from gateway.emulator import ApiKey, Emulator, EmulatorConfig
from gateway.model import Passing
from gateway.store import Store
from tests.fixtures.daemon import Daemon, read_only_query, write_config
from tests.fixtures.ports import free_port

KEY = "ror-" + "0123456789abcdef0123"
DEFAULT_WINDOW_S = 3.0
GOALS = {
    "ingest_reads_per_s": (">=", 50_000),
    "ingest_ratio": (">=", 0.15),
    "drain_passings_per_s": (">=", 20_000),
    "drain_ratio": (">=", 50),
    "latency_p99_beyond_window_ms": ("<=", 250),
    "recovery_s": ("<=", 5),
    "rss_mb": ("<=", 80),
    "startup_s": ("<=", 1.5),
    "parser_min_lines_per_s": (">=", 100_000),
}


def csv_lines(n: int, start: int = 0) -> list[str]:
    """Distinct chips, one read each: every line is one read and one passing."""
    t0 = datetime(2026, 5, 3, 9, 0, tzinfo=UTC)
    return [
        f"{100 + i},CHIP{100 + i},{(t0 + timedelta(milliseconds=7 * i)).isoformat(timespec='milliseconds')[:-6]}Z"
        for i in range(start, start + n)
    ]


def daemon(d: Path, emu: Emulator, port: int, window: float, db: str = "outbox.db") -> Daemon:
    """The daemon as a user configures it: the product's linger, info logs (the test fixture's debug level and
    50 ms linger are for tests), one csv reader on tcp-listen."""
    cfg = write_config(
        d / "gw.toml",
        base_url=emu.base_url,
        api_key=KEY,
        db=str(d / db),
        readers=[
            {"name": "finish", "url": f"tcp-listen://127.0.0.1:{port}", "format": "csv", "dedup_window_s": window}
        ],
    )
    text = cfg.read_text().replace("linger_s = 0.05\n", "").replace('level = "debug"', 'level = "info"')
    cfg.write_text(text)
    return Daemon(cfg)


def count(db: Path, sql: str) -> int:
    with contextlib.suppress(sqlite3.OperationalError):
        return int(read_only_query(db, sql)[0][0] or 0)
    return 0


async def wait_for(what: str, pred: Any, timeout: float, poll: float = 0.01) -> float:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise SystemExit(f"benchmark: {what} not reached after {timeout} s")
        await asyncio.sleep(poll)
    return time.perf_counter()


async def send(port: int, lines: list[str], rate: float | None = None) -> None:
    _r, w = await asyncio.open_connection("127.0.0.1", port)
    if rate is None:
        w.write("".join(line + "\n" for line in lines).encode())
        await w.drain()
    else:
        t0 = time.perf_counter()
        for i, line in enumerate(lines):
            w.write((line + "\n").encode())
            await w.drain()
            delay = t0 + (i + 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
    w.close()
    await w.wait_closed()


async def ingest(d: Path, emu: Emulator, n: int) -> dict[str, Any]:
    port = free_port()
    dm = daemon(d, emu, port, DEFAULT_WINDOW_S)
    await dm.start()
    try:
        lines = csv_lines(n)
        t0 = time.perf_counter()
        await send(port, lines)
        t1 = await wait_for(f"{n} reads journaled", lambda: count(dm.db, "SELECT MAX(id) FROM reads") >= n, 600)
        got = count(dm.db, "SELECT COUNT(*) FROM reads")
        if got != n:
            raise SystemExit(f"ingest benchmark: {got} reads journaled, expected {n}")
        rows = read_only_query(
            dm.db, "SELECT link, reader, seq, reader_ts, received_at, chip, bib, raw, origin FROM reads"
        )
    finally:
        await dm.terminate()
    return {"reads": n, "seconds": t1 - t0, "reads_per_s": n / (t1 - t0), "rows": rows}


def ceiling(d: Path, rows: list[tuple[Any, ...]]) -> float:
    """Raw sqlite3: the same rows, one executemany, one transaction, WAL + synchronous=FULL, the real schema."""
    db = d / "ceiling.db"
    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = FULL")
        t0 = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        con.executemany(
            "INSERT INTO reads (link, reader, seq, reader_ts, received_at, chip, bib, raw, origin)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        con.execute("COMMIT")
        seconds = time.perf_counter() - t0
        if con.execute("SELECT COUNT(*) FROM reads").fetchone()[0] != len(rows):
            raise SystemExit("ceiling benchmark: rows missing")
    finally:
        con.close()
    return len(rows) / seconds


async def naive_drain(emu: Emulator, n: int) -> float:
    """One POST per passing, each on a new client (a new TCP connection)."""
    setup = RufusClient(emu.base_url, KEY, timeouts=Timeouts(connect=2.0, read=10.0, total=15.0))
    try:
        deviceid = (await setup.bind_device(DeviceBind("One4All", "SN-BENCH-NAIVE"))).deviceid
        token = (await setup.create_session(SessionCreate(deviceid, "naive"))).token_session
    finally:
        await setup.close()
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        client = RufusClient(emu.base_url, KEY, timeouts=Timeouts(connect=2.0, read=10.0, total=15.0))
        try:
            p = Passing(timestamp=datetime(2026, 5, 3, 9, tzinfo=UTC) + timedelta(seconds=i), num_passing=i, bib=str(i))
            await client.insert_passings(token, [p])
        finally:
            await client.close()
    seconds = time.perf_counter() - t0
    assert emu.store is not None
    if sorted(emu.store.num_passings(token)) != list(range(1, n + 1)):
        raise SystemExit("naive drain benchmark: the emulator does not hold exactly 1..n")
    return n / seconds


def _ts(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


async def latency(d: Path, emu: Emulator, window: float, n: int, rate: float) -> dict[str, float]:
    port = free_port()
    dm = daemon(d, emu, port, window)
    await dm.start()
    try:
        await send(port, csv_lines(n), rate=rate)
        await wait_for(
            "all Sent", lambda: count(dm.db, "SELECT COUNT(*) FROM passings WHERE state = 'Sent'") >= n, 120, 0.05
        )
        pairs = read_only_query(
            dm.db, "SELECT r.received_at, p.sent_at FROM passings p JOIN reads r ON r.id = p.read_id"
        )
    finally:
        await dm.terminate()
    ms = [(_ts(sent) - _ts(recv)).total_seconds() * 1000 for recv, sent in pairs]
    if len(ms) != n:
        raise SystemExit(f"latency benchmark: {len(ms)} passings, expected {n}")
    return {"p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99)}


async def recovery(d: Path, emu: Emulator, n: int) -> float:
    port = free_port()
    dm = daemon(d, emu, port, 0.0)
    await dm.start()
    pending = "SELECT COUNT(*) FROM passings WHERE state = 'Pending'"
    try:
        # the session is made with the first read: one online first, then the outage
        sent = "SELECT COUNT(*) FROM passings WHERE state = 'Sent'"
        await send(port, csv_lines(1))
        await wait_for("the first read Sent", lambda: count(dm.db, sent) == 1, 60, 0.05)
        emu.set_offline(True)
        await send(port, csv_lines(n, start=1))
        await wait_for(f"{n} pending", lambda: count(dm.db, pending) >= n, 600, 0.05)
        emu.set_offline(False)
        t_first = await wait_for("first Sent after the outage", lambda: count(dm.db, sent) > 1, 120)
        t_zero = await wait_for("zero pending", lambda: count(dm.db, pending) == 0, 600)
        if count(dm.db, sent) != n + 1:
            raise SystemExit("recovery benchmark: not every passing Sent")
    finally:
        emu.set_offline(False)
        await dm.terminate()
    return t_zero - t_first


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def footprint(d: Path, emu: Emulator, rows: int, live: int) -> tuple[float, float, float]:
    """(peak RSS MB, start -> READY s after a clean stop, start -> READY s after a SIGKILL), with `rows` reads,
    Sent passings and chips' dedup states of an earlier season already in the database: the first start
    follows SIGTERM (the database was closed cleanly); the second follows a kill, the power cut's case, where
    the integrity check runs before READY."""
    port = free_port()
    dm = daemon(d, emu, port, 0.0)
    await dm.start()  # creates the schema and the race's session
    await dm.terminate()
    # A long season already on the card: `rows` reads and Sent passings of an earlier, closed session.
    con = sqlite3.connect(dm.db, isolation_level=None)
    try:
        con.execute("BEGIN")
        now = "2026-05-02T09:00:00.000+00:00"
        con.execute(
            "INSERT INTO sessions (token_session, alias, deviceid, created_by_us, floor, allocated, active,"
            " created_at, closed_at) VALUES ('old-season', 'old', NULL, 1, 0, ?, 0, ?, ?)",
            (rows, now, now),
        )
        con.executemany(
            "INSERT INTO reads (id, link, reader, seq, reader_ts, received_at, chip, bib, raw, origin)"
            " VALUES (?, 'finish', 'finish', NULL, ?, ?, ?, ?, '', 'reader')",
            ((i, now, now, f"OLD{i}", str(i)) for i in range(1, rows + 1)),
        )
        con.executemany(
            "INSERT INTO passings (token_session, num_passing, timestamp, bib, chip, state, sent_at, read_id,"
            " created_at) VALUES ('old-season', ?, ?, ?, ?, 'Sent', ?, ?, ?)",
            ((i, now, str(i), f"OLD{i}", now, i, now) for i in range(1, rows + 1)),
        )
        # the pipeline has long processed them, as on a card after a season: and it remembers each chip's
        # crossing (its closed window's dedup state), which a start must not bring into memory
        con.executemany(
            "INSERT INTO dedup (reader, key, state) VALUES ('finish', ?, ?)",
            ((f"chip:OLD{i}", f'{{"crossings": [{1777712400000 + i}]}}') for i in range(1, rows + 1)),
        )
        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('pipeline.cursor', ?)", (str(rows),))
        con.execute("COMMIT")
    finally:
        con.close()
    # The season's last run: a start that checks the file another process wrote, and a clean stop.
    await dm.start()
    await dm.terminate()
    t0 = time.perf_counter()
    await dm.start()
    startup = time.perf_counter() - t0
    try:
        assert dm.proc is not None
        pid = dm.proc.pid
        await send(port, csv_lines(live))
        sent = "SELECT COUNT(*) FROM passings WHERE state = 'Sent' AND token_session != 'old-season'"
        await wait_for("live reads Sent", lambda: count(dm.db, sent) >= live, 600, 0.05)
        rss = vm_hwm_mb(pid)
        await dm.kill()  # no clean shutdown: the next start checks the whole file before READY
        t0 = time.perf_counter()
        await dm.start()
        after_crash = time.perf_counter() - t0
    finally:
        await dm.terminate()
    return rss, startup, after_crash


async def main() -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "")
    p.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    p.add_argument("--ingest", type=int, help="reads sent for the ingest figure (default 100000, quick 20000)")
    p.add_argument("--ingest-runs", type=int, help="bursts the ingest figure is the median of (default 3, quick 1)")
    p.add_argument("--drain", type=int, help="Pending passings drained (default 100000, quick 20000)")
    p.add_argument("--naive", type=int, help="passings for the one-POST-each baseline (default 2000, quick 300)")
    p.add_argument("--latency-s", type=float, help="seconds of steady reads per latency run (default 20, quick 3)")
    p.add_argument("--rate", type=float, default=200.0, help="reads/s in the latency runs")
    p.add_argument("--recovery", type=int, help="pending at the outage's end (default 30000, quick 5000)")
    p.add_argument("--rows", type=int, help="rows already in the database (default 1000000, quick 50000)")
    p.add_argument("--runners", type=int, help="simulated runners per parser (default 6000, quick 300)")
    p.add_argument("--dir", type=Path, default=None, help="where the files go (default: under the cwd)")
    a = p.parse_args()
    quiet_logs()
    q = a.quick
    n_ingest = a.ingest or (20_000 if q else 100_000)
    ingest_runs = a.ingest_runs or (1 if q else 3)
    n_drain = a.drain or (20_000 if q else 100_000)
    n_naive = a.naive or (300 if q else 2_000)
    lat_s = a.latency_s or (3.0 if q else 20.0)
    n_recovery = a.recovery or (5_000 if q else 30_000)
    n_rows = a.rows or (50_000 if q else 1_000_000)
    runners = a.runners or (300 if q else 6_000)

    emu = Emulator(EmulatorConfig(port=free_port(), api_keys=[ApiKey.parse(f"{KEY}:READ_WRITE")], seed=1))
    await emu.start()
    fig: dict[str, Any] = {"benchmark": "run", "quick": q}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-run-", dir=a.dir or Path.cwd()) as tmp:
            root = Path(tmp)

            def sub(name: str) -> Path:
                (root / name).mkdir()
                return root / name

            # A burst lasts a second or two, so one run is at the mercy of whatever else the machine does in
            # it: each figure is the median of --ingest-runs bursts (each on a fresh daemon and database) and
            # of as many ceilings, one after each burst on its rows.
            rates, ceilings = [], []
            for k in range(ingest_runs):
                ing = await ingest(sub(f"ingest{k}"), emu, n_ingest)
                ceil_dir = sub(f"ceiling{k}")
                box = await Store.open(ceil_dir / "ceiling.db")
                await box.close()
                rates.append(ing["reads_per_s"])
                ceilings.append(ceiling(ceil_dir, ing["rows"]))
            rate, ceil = statistics.median(rates), statistics.median(ceilings)
            fig |= {
                "ingest_reads": n_ingest,
                "ingest_runs": [round(r, 1) for r in rates],
                "ingest_reads_per_s": round(rate, 1),
                "ingest_ceiling_rows_per_s": round(ceil, 1),
                "ingest_ratio": ratio(rate, ceil),
            }
            dr = await one_run(emu, KEY, sub("drain") / "drain.db", UploadRun("batched", 500, 0, n_drain))
            naive = await naive_drain(emu, n_naive)
            fig |= {
                "drain_passings": n_drain,
                "drain_passings_per_s": round(dr.per_s, 1),
                "drain_naive_per_s": round(naive, 1),
                "drain_ratio": ratio(dr.per_s, naive),
            }
            n_lat = max(1, int(lat_s * a.rate))
            l0 = await latency(sub("lat0"), emu, 0.0, n_lat, a.rate)
            ld = await latency(sub("latd"), emu, DEFAULT_WINDOW_S, n_lat, a.rate)
            fig |= {
                "latency_p50_ms": round(l0["p50_ms"], 1),
                "latency_p99_ms": round(l0["p99_ms"], 1),
                "latency_window_s": DEFAULT_WINDOW_S,
                "latency_window_p50_ms": round(ld["p50_ms"], 1),
                "latency_window_p99_ms": round(ld["p99_ms"], 1),
                "latency_p99_beyond_window_ms": round(max(l0["p99_ms"], ld["p99_ms"] - DEFAULT_WINDOW_S * 1000), 1),
            }
            fig["recovery_pending"] = n_recovery
            fig["recovery_s"] = round(await recovery(sub("recovery"), emu, n_recovery), 3)
            rss, startup, after_crash = await footprint(sub("footprint"), emu, n_rows, max(1000, n_ingest // 10))
            fig |= {"footprint_rows": n_rows, "rss_mb": round(rss, 1), "startup_s": round(startup, 3)}
            fig["startup_after_kill_s"] = round(after_crash, 3)
            parsers = {name: parse_bench(name, runners, 2 if q else 5) for name in formats.names()}
            fig["parser_lines_per_s"] = {n: r["records_per_s"] for n, r in parsers.items()}
            fig["parser_min_lines_per_s"] = min(fig["parser_lines_per_s"].values())
    finally:
        await emu.stop()
    fig["peak_rss_mb"] = peak_rss_mb()
    fig |= machine()

    missed = []
    table = Table(title="rufus-gateway performance" + (" (--quick: rough)" if q else ""))
    for col in ("figure", "value", "goal", "met"):
        table.add_column(col)
    rows = [
        ("ingest_reads_per_s", "ingest reads/s (daemon, loopback, FULL; median)"),
        ("ingest_ceiling_rows_per_s", "ingest ceiling rows/s (raw executemany)"),
        ("ingest_ratio", "ingest / ceiling"),
        ("drain_passings_per_s", "drain passings/s (batch 500)"),
        ("drain_naive_per_s", "drain baseline /s (POST each, new conn)"),
        ("drain_ratio", "drain / baseline"),
        ("latency_p50_ms", "read->Sent p50 ms (window 0)"),
        ("latency_p99_ms", "read->Sent p99 ms (window 0)"),
        ("latency_window_p99_ms", f"read->Sent p99 ms (window {DEFAULT_WINDOW_S:g} s)"),
        ("latency_p99_beyond_window_ms", "p99 beyond the window ms"),
        ("recovery_s", "recovery s (first 2xx -> 0 pending)"),
        ("rss_mb", f"peak RSS MB ({n_rows} rows in the DB)"),
        ("startup_s", "start -> READY s (after a clean stop)"),
        ("startup_after_kill_s", "start -> READY s (after SIGKILL: full check first)"),
        ("parser_min_lines_per_s", "slowest parser lines/s"),
    ]
    for key, label in rows:
        goal = GOALS.get(key)
        met = ""
        if goal:
            op, target = goal
            ok = fig[key] >= target if op == ">=" else fig[key] <= target
            met = "yes" if ok else "NO"
            if not ok:
                missed.append(key)
        table.add_row(label, f"{fig[key]:,}", f"{goal[0]} {goal[1]:,}" if goal else "", met)
    for name, v in fig["parser_lines_per_s"].items():
        table.add_row(f"  parser {name} lines/s", f"{v:,}", "", "")
    Console(width=100).print(table)
    fig["goals_missed"] = missed
    emit(fig)
    return 1 if a.strict and missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
