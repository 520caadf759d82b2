"""A Jepsen-style set checker for the gateway's one promise: nothing lost, nothing doubled.

Three witnesses are compared, and none of them is the gateway's own opinion of itself:

- the reader side (the simulator's truth file): every read it sent, and which the gateway acknowledged;
- the gateway's database, read after the fact: the journal of raw reads, the passings and their states;
- the cloud (the emulator's store): per session, the passings it holds.

The level of comparison is the one the gateway promises. A crossing is seen several times by a mat, so reads
and passings are not one-to-one: the pipeline turns the reads of one chip within its dedup window into one
passing whose timestamp is one of those reads' (`first` or `strongest`). Hence:

- a read is *covered* by a passing of the same reader and chip whose time p satisfies p - window < t < p + hold
  (the pipeline's own suppression rule, strict bounds); every journaled read must be covered (lost otherwise),
  and every acknowledged read must be journaled (invariant 1);
- two delivered passings of the same reader and chip closer than the window, or two passings derived from the
  same journaled read, are a duplicate (the pipeline never emits those, so a crash or a replay did);
- a delivered passing whose (chip, time) is no journaled read is unexpected, and so is a cloud passing whose
  number the gateway never allocated, or whose bib/time differs from the local row of that number;
- per session, the cloud's numbers plus the local Rejected, Moved and Voided ones are exactly floor+1..N, disjoint
  (invariants 2-4), and every local `Sent` is in the cloud (invariant 3: Sent only on a 2xx).

Everything here is pure except the two loaders that read files (`load_truth`, `snapshot_db`, `cloud_from_db`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from gateway.model import parse_ts

Claim = Literal["acknowledged", "journaled"]
EXAMPLES = 10  # offending items kept per category, for the failure message
DEFAULT_WAL_LIMIT = 32 * 1024 * 1024  # autocheckpoint keeps the WAL near 4 MB; 32 MB means it ran away


def chip_key(chip: str | None, bib: str | None) -> str:
    """Normalise the way the pipeline's chip map does (blanks, case, leading zeros), so both sides agree."""
    if chip is not None and chip.strip():
        c = chip.strip().upper()
        return "chip:" + (c.lstrip("0") or "0")
    return "bib:" + (bib or "").strip()


def ts_ms(text: str) -> int:
    return round(parse_ts(text).timestamp() * 1000)


# -- the reader's truth ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SentRead:
    key: str
    ts_ms: int
    seq: int | None
    acked: bool


@dataclass
class Truth:
    reads: list[SentRead] = field(default_factory=list)  # distinct reads, first send order
    resends: int = 0
    corrupt: int = 0
    files: int = 0
    complete: bool = True  # the last file ended with a summary saying every read was sent (and acked)

    @property
    def acked(self) -> list[SentRead]:
        return [r for r in self.reads if r.acked]


def load_truth(paths: Iterable[str | Path]) -> Truth:
    """Fold one or several truth files (a rebooted reader writes a new one) into the distinct reads sent.

    Lines: {"type": "read", chip, bib, timestamp, seq, resend}, {"type": "ack", chip, bib, timestamp},
    {"type": "corrupt"}, {"type": "summary", complete, ...}. A killed simulator may leave a cut last line."""
    truth = Truth()
    index: dict[tuple[str, int], int] = {}
    acked: set[tuple[str, int]] = set()
    for path in paths:
        truth.files += 1
        summary: dict[str, Any] | None = None
        with Path(path).open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    break  # only ever the last line of a killed run
                kind = obj.get("type")
                if kind in ("read", "ack"):
                    k = (chip_key(obj.get("chip"), obj.get("bib")), ts_ms(obj["timestamp"]))
                    if kind == "ack":
                        acked.add(k)
                        continue
                    if obj.get("resend"):
                        truth.resends += 1
                    if k not in index:
                        index[k] = len(truth.reads)
                        truth.reads.append(SentRead(k[0], k[1], obj.get("seq"), False))
                elif kind == "corrupt":
                    truth.corrupt += 1
                elif kind == "summary":
                    summary = obj
        # Only the last incarnation counts: an earlier one was killed on purpose (a reader reboot).
        truth.complete = summary is not None and bool(summary.get("complete", False))
    truth.reads = [SentRead(r.key, r.ts_ms, r.seq, (r.key, r.ts_ms) in acked) for r in truth.reads]
    return truth


# -- the gateway's database ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class JournalRow:
    id: int
    reader: str
    seq: int | None
    key: str
    ts_ms: int
    origin: str


@dataclass(frozen=True)
class LocalPassing:
    token_session: str
    num: int
    state: str
    key: str
    bib: str
    ts_ms: int
    read_id: int | None
    origin: str


@dataclass
class LocalSnapshot:
    reads: list[JournalRow] = field(default_factory=list)
    passings: list[LocalPassing] = field(default_factory=list)
    floors: dict[str, int] = field(default_factory=dict)
    rejected_lines: int = 0
    integrity: list[str] = field(default_factory=lambda: ["ok"])
    wal_bytes: int = 0


def snapshot_db(path: str | Path, *, live: bool = False) -> LocalSnapshot:
    """Read the gateway's database the way a forensic look would. With `live` False (the daemon is stopped)
    the file is opened normally, which recovers a WAL left by a SIGKILL, exactly as the next start would;
    the WAL size is measured before that. Runs the full `PRAGMA integrity_check`."""
    path = Path(path)
    wal = Path(str(path) + "-wal")
    wal_bytes = wal.stat().st_size if wal.exists() else 0
    uri = f"file:{path}?mode=ro" if live else f"file:{path}?mode=rw"
    con = sqlite3.connect(uri, uri=True, timeout=10)
    try:
        snap = LocalSnapshot(wal_bytes=wal_bytes)
        snap.integrity = [str(r[0]) for r in con.execute("PRAGMA integrity_check")]
        for r in con.execute("SELECT id, reader, seq, chip, bib, reader_ts, origin FROM reads ORDER BY id"):
            snap.reads.append(JournalRow(r[0], r[1], r[2], chip_key(r[3], r[4]), ts_ms(r[5]), r[6]))
        for r in con.execute(
            "SELECT token_session, num_passing, state, chip, bib, timestamp, read_id, origin FROM passings ORDER BY id"
        ):
            snap.passings.append(LocalPassing(r[0], r[1], r[2], chip_key(r[3], r[4]), r[4], ts_ms(r[5]), r[6], r[7]))
        snap.floors = {str(r[0]): int(r[1]) for r in con.execute("SELECT token_session, floor FROM sessions")}
        snap.rejected_lines = int(con.execute("SELECT COUNT(*) FROM rejected_lines").fetchone()[0])
        return snap
    finally:
        con.close()


# -- the cloud -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CloudPassing:
    token_session: str
    num: int
    key: str
    bib: str
    ts_ms: int


def cloud_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[CloudPassing]:
    """Passings as the API (or the emulator's store) returns them: dicts with token_session, num_passing,
    timestamp, bib, chip."""
    return [
        CloudPassing(
            str(r["token_session"]),
            int(r["num_passing"]),
            chip_key(r.get("chip"), r.get("bib")),
            str(r["bib"]),
            ts_ms(str(r["timestamp"])),
        )
        for r in rows
    ]


def cloud_from_db(path: str | Path) -> list[CloudPassing]:
    """The emulator's SQLite file (`rufus-gateway emulator --db`), read-only."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    con.row_factory = sqlite3.Row
    try:
        rows = con.execute("SELECT * FROM passings ORDER BY token_session, num_passing")
        return cloud_from_rows(dict(r) for r in rows)
    finally:
        con.close()


# -- the verdict -------------------------------------------------------------------------------------------------
FAILURES = (
    "lost_acked", "lost_reads", "unexpected_reads", "journal_duplicates", "duplicated_passings",
    "unexpected_passings", "mismatched", "missing_numbers", "overlapping_numbers", "local_gaps",
    "sent_not_in_cloud",
)  # fmt: skip


@dataclass
class Report:
    figures: dict[str, Any]
    details: dict[str, list[Any]]

    @property
    def ok(self) -> bool:
        return bool(self.figures["ok"])

    def json_line(self) -> str:
        return json.dumps(self.figures, sort_keys=True, separators=(",", ":"))

    def problems(self) -> str:
        """What failed, with examples: the assertion message of a chaos test."""
        out = [self.json_line()]
        for name, items in self.details.items():
            if items:
                out.append(f"{name}: {items[:EXAMPLES]}")
        return "\n".join(out)


def check(
    local: LocalSnapshot,
    cloud: Sequence[CloudPassing],
    truth: Truth | None = None,
    *,
    claim: Claim = "acknowledged",
    window_s: float = 3.0,
    hold_s: float | None = None,
    allow_pending: bool = False,
    wal_limit: int = DEFAULT_WAL_LIMIT,
    wal_max: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Report:
    """Compare the three witnesses. `claim` says which reads must reach the cloud: those the gateway
    acknowledged to the reader (an acknowledging protocol) or those it journaled (fire-and-forget links).
    `allow_pending` accepts passings still queued locally (a run that ends during an outage). `wal_max` is
    the largest WAL seen during the run (sampled, and after every kill): the final one alone says nothing,
    SIGTERM truncates it."""
    w_ms = round(window_s * 1000)
    h_ms = max(w_ms, round((hold_s or 0) * 1000))
    details: dict[str, list[Any]] = defaultdict(list)

    def bad(name: str, item: Any) -> None:
        details[name].append(item)

    # 1. reader -> journal ---------------------------------------------------------------------------------
    reader_reads = [r for r in local.reads if r.origin == "reader"]
    journal_keys = Counter((r.key, r.ts_ms) for r in reader_reads)
    for (k, t), n in journal_keys.items():
        if n > 1:  # the same crossing-read stored twice: a re-send not recognised
            bad("journal_duplicates", {"chip": k, "ts_ms": t, "times": n})
    if truth is not None:
        sent = {(r.key, r.ts_ms) for r in truth.reads}
        for r in truth.reads:
            if r.acked and (r.key, r.ts_ms) not in journal_keys:
                bad("lost_acked", {"chip": r.key, "ts_ms": r.ts_ms, "seq": r.seq})
        for k, t in journal_keys:
            if (k, t) not in sent:
                bad("unexpected_reads", {"chip": k, "ts_ms": t})

    # 2. journal -> passings -> cloud --------------------------------------------------------------------
    reader_of = {r.id: r.reader for r in local.reads}
    by_num = {(p.token_session, p.num): p for p in local.passings}
    cloud_by_num: dict[tuple[str, int], CloudPassing] = {}
    for c in cloud:
        cloud_by_num[(c.token_session, c.num)] = c
    floors = local.floors
    foreign = 0
    for c in cloud:
        mine = by_num.get((c.token_session, c.num))
        if mine is None:
            if c.token_session not in floors:
                foreign += 1  # a session this database never knew (another device, or a database lost)
            elif c.num > floors[c.token_session]:
                bad("unexpected_passings", {"session": c.token_session[:8], "num": c.num, "why": "never allocated"})
            continue
        if mine.bib != c.bib or mine.ts_ms != c.ts_ms:
            bad(
                "mismatched",
                {
                    "session": c.token_session[:8],
                    "num": c.num,
                    "local": [mine.bib, mine.ts_ms],
                    "cloud": [c.bib, c.ts_ms],
                },
            )

    # the passings that stand for reads: in the cloud, set aside as Rejected, or (if allowed) still queued
    effective: list[LocalPassing] = []
    for p in local.passings:
        in_cloud = (p.token_session, p.num) in cloud_by_num
        if p.state == "Sent" and not in_cloud:
            bad("sent_not_in_cloud", {"session": p.token_session[:8], "num": p.num})
        if p.state != "Moved" and (in_cloud or p.state == "Rejected" or (allow_pending and p.state == "Pending")):
            effective.append(p)  # a Moved row that reached the cloud anyway is an overlap (below)

    journal_index = set(journal_keys)
    by_chip: dict[tuple[str, str], list[int]] = defaultdict(list)
    per_read: Counter[int] = Counter()
    for p in effective:
        if p.origin != "reader":
            continue
        reader = reader_of.get(p.read_id, "?") if p.read_id is not None else "?"
        by_chip[(reader, p.key)].append(p.ts_ms)
        if p.read_id is not None:
            per_read[p.read_id] += 1
        if (p.key, p.ts_ms) not in journal_index:
            bad("unexpected_passings", {"session": p.token_session[:8], "num": p.num, "why": "no such read"})
    for (reader, k), times in by_chip.items():
        times.sort()
        for a, b in pairwise(times):
            if b - a < w_ms:
                bad("duplicated_passings", {"reader": reader, "chip": k, "ts_ms": [a, b]})
    for read_id, n in per_read.items():
        if n > 1:
            bad("duplicated_passings", {"read_id": read_id, "times": n})

    # every journaled reader read is covered by one of those passings
    for jr in reader_reads:
        times = by_chip.get((jr.reader, jr.key), [])
        if not any(p - w_ms < jr.ts_ms < p + h_ms or p == jr.ts_ms for p in times):
            bad("lost_reads", {"reader": jr.reader, "chip": jr.key, "ts_ms": jr.ts_ms, "read_id": jr.id})

    # 3. numbering per session ---------------------------------------------------------------------------
    sessions = {p.token_session for p in local.passings} | {c.token_session for c in cloud if c.token_session in floors}
    states: Counter[str] = Counter(p.state for p in local.passings)
    for s in sorted(sessions):
        floor = floors.get(s, 0)
        local_nums = {p.num for p in local.passings if p.token_session == s}
        cloud_nums = {c.num for c in cloud if c.token_session == s and c.num > floor}
        set_aside = {
            p.num for p in local.passings if p.token_session == s and p.state in ("Rejected", "Moved", "Voided")
        }
        pending = {p.num for p in local.passings if p.token_session == s and p.state == "Pending"} - cloud_nums
        top = max(local_nums | cloud_nums, default=floor)
        expected = set(range(floor + 1, top + 1))
        for n in sorted(expected - local_nums):
            bad("local_gaps", {"session": s[:8], "num": n})
        for n in sorted(expected - cloud_nums - set_aside - pending):
            bad("missing_numbers", {"session": s[:8], "num": n})
        for n in sorted(cloud_nums & set_aside):
            bad("overlapping_numbers", {"session": s[:8], "num": n})

    pending_total = sum(
        1 for p in local.passings if p.state == "Pending" and (p.token_session, p.num) not in cloud_by_num
    )
    integrity = "ok" if local.integrity == ["ok"] else "; ".join(local.integrity[:3])
    figures: dict[str, Any] = {
        "claim": claim,
        "reads_sent": len(truth.reads) if truth is not None else None,
        "reads_acked": len(truth.acked) if truth is not None else None,
        "reader_resends": truth.resends if truth is not None else None,
        "reads_journaled": len(reader_reads),
        "passings_local": len(local.passings),
        "passings_cloud": len(cloud),
        "cloud_foreign": foreign,
        "sessions": len(sessions),
        "pending": pending_total,
        "rejected": states["Rejected"],
        "moved": states["Moved"],
        "rejected_lines": local.rejected_lines,
        "integrity": integrity,
        "wal_bytes": local.wal_bytes,
        "wal_bytes_max": max(local.wal_bytes, wal_max or 0),
        "wal_limit": wal_limit,
        "floors_nonzero": sum(1 for f in local.floors.values() if f),
    }
    if truth is not None and claim == "journaled":
        sent = {(r.key, r.ts_ms) for r in truth.reads}
        figures["sent_not_journaled"] = len(sent - journal_index)  # on the wire when the gateway died: no ack
    for name in FAILURES:
        figures[name] = len(details.get(name, []))
    figures.update(extra or {})
    failures = sum(figures[n] for n in FAILURES)
    wal_peak = int(figures["wal_bytes_max"])
    figures["ok"] = (
        failures == 0 and integrity == "ok" and wal_peak <= wal_limit and (allow_pending or pending_total == 0)
    )
    if wal_peak > wal_limit:
        details["wal"].append(f"WAL reached {wal_peak} bytes > limit {wal_limit} (at the end: {local.wal_bytes})")
    if not allow_pending and pending_total:
        details["pending"].append(f"{pending_total} passings still Pending at the end")
    return Report(figures, dict(details))


def wal_size(db: str | Path) -> int:
    """Bytes in `<db>-wal` now (0 if none): sampled during a run to bound the WAL's growth."""
    try:
        return os.stat(str(db) + "-wal").st_size
    except FileNotFoundError:
        return 0
