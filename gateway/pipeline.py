"""Reads -> passings: duplicate window, chip -> bib mapping, timezone/location stamping.

The pipeline reads the journal (`reads`) in id order and writes passings into the current session. Its
progress (the last read id processed) and its open duplicate windows are stored in the same transaction as
the passings they produce, so a restart, or a replay of the same journal, derives exactly the same passings
with the same num_passings.

Duplicate windows are keyed by (reader, chip) and measured on the READER's timestamps, never on arrival:
- `first`: the earliest read of a crossing (by reader time) is the passing; reads of the same chip within the
  window of it are the same crossing. Reads do not always arrive in reader order (a re-fetch brings a lost
  read after later ones), so the window is held like a `strongest` one and emits its earliest read when it
  closes: the passing is the same whatever order the reads arrived in.
- `strongest`: the read with the highest RSSI in the window is the passing (reads without one, such as an
  IPICO's, whose I/Q figures are decode counters, never displace the first).
Either window is emitted when it has closed: a later read of that chip beyond the window, or, for a chip that
is not read again, once the gateway has received reads (or its clock has passed) the window plus
`close_grace_s` (default: 1 s for `strongest`, none for `first`) after the window opened. That second rule
uses the stored arrival times of journaled reads, so it gives the same result on replay.
- `finished_window_s` (optional, longer): once a chip has a passing, later crossings within this window are
  suppressed (a runner who lingers on the mat, or walks back over it).
A reader in first/last-seen mode (IPICO) reports each presence twice; `seen` ("first" or "last") keeps only
that one of the two (a tag seen once, "both", and ordinary reads are always kept). The others stay in the
journal and are counted (`reads_dropped_seen`), never turned into passings.
Manual reads (origin `manual`) bypass all of this: the operator asked for exactly that passing.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import heapq
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.chipmap import ChipMap
from gateway.config import DEDUP_MODES, IPICO_SEEN, choices_text
from gateway.errors import ConfigError
from gateway.log import get_logger
from gateway.store import JournaledRead, NewPassing, Store

log = get_logger("gateway.pipeline")

CURSOR_KEY = "pipeline.cursor"
GENERATION_KEY = "pipeline.generation"  # bumped by every step's transaction: tells a stale cache
BATCH = 500  # reads per transaction
HISTORY = 16  # crossings remembered per (reader, chip)
# A window closes by the clock once `now - CLOCK_SETTLE_MS` has passed its deadline AND no read that arrived
# before it can still appear: none is in a journal transaction still open (Store.journal_open_since), and
# none committed after the pipeline last read the journal (Store.journal_last_id). So the margin only covers
# the clock's own granularity; it used to be 500 ms of hoping the journal was quicker than that.
CLOCK_SETTLE_MS = 50
CLOCK_BACK_MS = 300_000  # every open deadline this far ahead of the clock: the clock was set back
# The dedup state of every (reader, chip) is in the database (`dedup`); memory holds the keys with an open
# window and, of the others, at most CACHED_KEYS touched in the last CACHE_IDLE_MS of arrival time. A read of a
# key not held is looked up in the table first (one query a batch), so what the pipeline decides is the same
# whether a key was held or not: a closed window's state costs memory only while its chip is being read.
CACHED_KEYS = 20_000
CACHE_IDLE_MS = 60_000


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# -- chip map: gateway/chipmap.py (re-exported here) -----------------------------------------------------------
_NO_MAP = ChipMap.empty()


# -- rules and stamp ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReaderRules:
    dedup_window_s: float = 3.0
    dedup_mode: Literal["first", "strongest"] = "first"
    finished_window_s: float | None = None
    chip_map: ChipMap | None = None
    # how long after a window's end (arrival clock) to wait for reads still on their way; None: 1 s for
    # `strongest` (a stronger read may be in flight), 0 for `first` (only out-of-order reads matter, and a
    # re-fetch answers within moments), so a `first` passing waits one window
    close_grace_s: float | None = None
    seen: Literal["both", "first", "last"] = "both"  # which first/last-seen reads may make a passing

    @property
    def grace_ms(self) -> int:
        grace = self.close_grace_s if self.close_grace_s is not None else (1.0 if self.dedup_mode == "strongest" else 0)
        return round(grace * 1000)

    def __post_init__(self) -> None:
        if self.dedup_mode not in DEDUP_MODES:
            raise ConfigError(
                f"dedup_mode must be {choices_text(DEDUP_MODES)}, got {self.dedup_mode!r}", key="reader.dedup_mode"
            )
        if self.seen not in IPICO_SEEN:
            raise ConfigError(
                f"ipico_seen must be {choices_text(IPICO_SEEN)}, got {self.seen!r}", key="reader.ipico_seen"
            )
        if self.dedup_window_s < 0:
            raise ConfigError("dedup_window_s must be >= 0", key="reader.dedup_window_s")
        if self.finished_window_s is not None and self.finished_window_s < 0:
            raise ConfigError("finished_window_s must be >= 0", key="reader.finished_window_s")


@dataclass(frozen=True)
class Stamp:
    timezone: str | None = None
    latitude: float | None = None
    longitude: float | None = None


# -- dedup state (stored as JSON per (reader, key) in the `dedup` table) ----------------------------------
@dataclass
class _Window:
    start_ms: int  # reader time of the window's first read
    deadline_rx_ms: int  # arrival-clock time after which the window is closed even without a later read
    best_id: int
    best_rssi: float | None
    best_ms: int
    chip: str | None
    bib: str
    link: str
    opened_rx_ms: int = 0  # arrival-clock time of the window's first read
    opened_id: int = 0  # journal id of that read: windows closing at the same instant close in journal order


@dataclass
class _KeyState:
    # reader times of this key's recent crossings that made a passing (ascending, bounded): a late read of
    # an earlier crossing (a reader catching up) is recognised, not only one of the latest crossing
    crossings: list[int] = field(default_factory=list)
    window: _Window | None = None

    def covers(self, t: int, before: int, after: int) -> bool:
        return any(c - before < t < c + after for c in self.crossings)

    def add(self, t: int) -> None:
        bisect.insort(self.crossings, t)
        del self.crossings[:-HISTORY]

    def copy(self) -> _KeyState:
        return _KeyState(list(self.crossings), dataclasses.replace(self.window) if self.window else None)

    def dump(self) -> str:
        d: dict[str, Any] = {"crossings": self.crossings}
        if self.window is not None:
            d["window"] = self.window.__dict__
        return json.dumps(d, sort_keys=True)

    @classmethod
    def load(cls, text: str) -> _KeyState:
        d = json.loads(text)
        w = d.get("window")
        return cls(crossings=list(d.get("crossings", [])), window=_Window(**w) if w else None)


def _left_out(read: JournaledRead, rules: ReaderRules) -> bool:
    """A first/last-seen read of the kind the reader's `seen` does not keep."""
    return rules.seen != "both" and read.seen in ("first", "last") and read.seen != rules.seen


def _better(rssi: float | None, than: float | None) -> bool:
    """Strictly stronger: on a tie the earlier read stays (deterministic)."""
    if rssi is None:
        return False
    return than is None or rssi > than


@dataclass
class _Step:
    """The changes of one transaction, applied to the cache only once it has committed."""

    changed: dict[tuple[str, str], _KeyState] = field(default_factory=dict)
    passings: list[NewPassing] = field(default_factory=list)
    unmapped: set[str] = field(default_factory=set)
    suppressed: int = 0
    dropped_seen: int = 0
    open: set[tuple[str, str]] = field(default_factory=set)  # keys with an open window
    deadlines: list[tuple[int, int, tuple[str, str]]] = field(default_factory=list)  # heap; stale entries skipped


class Pipeline:
    def __init__(
        self, outbox: Store, rules: Mapping[str, ReaderRules], stamp: Stamp, default_rules: ReaderRules = ReaderRules()
    ) -> None:
        self.outbox = outbox
        self.rules = dict(rules)
        self.stamp = stamp
        self.default_rules = default_rules
        # plain attributes for the status surfaces
        self.unmapped_chips: set[str] = set()
        self.passings_created = 0
        self.reads_processed = 0
        self.reads_suppressed = 0
        self.reads_dropped_seen = 0  # first/last-seen reads of the kind `seen` leaves out
        self.last_closed_by_clock = 0  # passings the last step emitted from windows that closed on the clock
        self.cursor: int | None = None
        self._generation: str | None = None
        self._state: dict[tuple[str, str], _KeyState] = {}  # the keys held in memory (see CACHED_KEYS)
        # held keys without an open window, by the arrival ms of their last change, oldest first (an OrderedDict:
        # a dict emptied from the front makes every next(iter()) skip what was deleted, O(n) each)
        self._touched: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()
        self._open: set[tuple[str, str]] = set()
        self._deadlines: list[tuple[int, int, tuple[str, str]]] = []
        self._lock = asyncio.Lock()

    def _rules_for(self, link: str) -> ReaderRules:
        return self.rules.get(link, self.default_rules)

    async def step(self, now: datetime | None = None) -> int:
        """Derive passings from every journaled read not yet processed (one transaction per batch), then
        close `strongest` windows whose time is up by the clock. Returns the passings created; 0 while
        there is no current session (the reads wait in the journal)."""
        async with self._lock:
            self.last_closed_by_clock = 0
            if await self.outbox.current_session() is None:
                return 0
            generation = await self.outbox.get_meta(GENERATION_KEY)
            if self.cursor is None or generation != self._generation:
                # First step, a commit whose outcome we did not see (cancelled while COMMIT ran), or another
                # writer: the database is the truth, never the cache.
                self._generation = generation
                stored = int(await self.outbox.get_meta(CURSOR_KEY) or 0)
                self._state = {k: _KeyState.load(v) for k, v in (await self.outbox.dedup_open()).items()}
                self._touched = collections.OrderedDict()
                self._open = {k for k, s in self._state.items() if s.window is not None}
                self._deadlines = [
                    (s.window.deadline_rx_ms, s.window.opened_id, k) for k, s in self._state.items() if s.window
                ]
                heapq.heapify(self._deadlines)
                self.cursor = stored
            created = 0
            while True:
                reads = await self.outbox.reads_after(self.cursor, BATCH)
                if not reads:
                    break
                keys = await self._hold(reads)
                work = self._work()
                for read, key in zip(reads, keys, strict=True):
                    self._close_due(work, _ms(read.received_at))
                    self._take(work, read, key)
                n = await self._commit(work, reads[-1].id, len(reads), _ms(reads[-1].received_at))
                if n is None:
                    return created
                created += n
            # Only once caught up with the journal: a window whose reads could still be queued stays open.
            now_ms = _ms(now or datetime.now(UTC)) - CLOCK_SETTLE_MS
            if self.outbox.journal_last_id > self.cursor:
                return created  # reads committed since that last query: the step their commit woke takes them first
            open_since = self.outbox.journal_open_since
            if open_since is not None:  # its reads arrived at open_since: windows due before then may close
                now_ms = min(now_ms, _ms(open_since) - 1)
            work = self._work()
            self._close_due(work, now_ms)
            self._close_from_the_future(work, now_ms)
            if work.passings:
                by_clock = await self._commit(work, self.cursor, 0, now_ms) or 0
                self.last_closed_by_clock = by_clock
                created += by_clock
            else:
                self._deadlines = work.deadlines  # only stale entries were dropped: keep the heap lean
            return created

    def next_deadline_s(self) -> float | None:
        """When (time.time()) the earliest open window may close by the clock; None: no window is open."""
        if not self._deadlines:
            return None
        return (self._deadlines[0][0] + CLOCK_SETTLE_MS) / 1000

    async def _hold(self, reads: Sequence[JournaledRead]) -> list[tuple[str, str] | None]:
        """Each read's duplicate-window key (None: the windows do not take it), once the stored state of those
        that memory does not hold is in `_state`."""
        keys = [self._key_of(read, self._rules_for(read.link)) for read in reads]
        missing = {key for key in keys if key is not None and key not in self._state}
        if missing:
            for key, text in (await self.outbox.dedup_state_of(missing)).items():
                self._state[key] = _KeyState.load(text)
        return keys

    def _forget(self, now_rx: int) -> None:
        """Let go of closed windows' states memory need not hold: beyond CACHED_KEYS, or idle for CACHE_IDLE_MS,
        oldest first. `_touched` holds only keys without an open window, so each one looked at goes."""
        touched, state = self._touched, self._state
        while touched:
            key = next(iter(touched))
            if len(touched) <= CACHED_KEYS and touched[key] > now_rx - CACHE_IDLE_MS:
                break
            touched.popitem(last=False)
            st = state.get(key)
            if st is not None and st.window is None:
                del state[key]

    async def _commit(self, work: _Step, cursor: int, reads: int, rx_ms: int) -> int | None:
        generation = str(int(self._generation or 0) + 1)
        try:
            result = await self.outbox.commit_step(
                work.passings,
                meta={CURSOR_KEY: str(cursor), GENERATION_KEY: generation},
                dedup_set={k: s.dump() for k, s in work.changed.items()},
            )
        except BaseException:
            self.cursor = None  # it may have landed: reload from the database at the next step
            raise
        if result is None:
            return None
        self._generation = generation
        self._state.update(work.changed)
        touched = self._touched
        for key, st in work.changed.items():
            if st.window is None:  # an open window is held until it closes, then counts from its close
                touched[key] = rx_ms
                touched.move_to_end(key)
            else:
                touched.pop(key, None)
        self._forget(rx_ms)
        self._open = work.open
        self._deadlines = work.deadlines
        self.cursor = cursor
        self.reads_processed += reads
        self.reads_suppressed += work.suppressed
        self.reads_dropped_seen += work.dropped_seen
        self.passings_created += len(work.passings)
        new_unmapped = work.unmapped - self.unmapped_chips
        if new_unmapped:
            before = len(self.unmapped_chips)
            self.unmapped_chips |= new_unmapped
            # first one, then at each power of ten: visible, but not a line per batch all race long
            if before == 0 or len(str(before)) != len(str(len(self.unmapped_chips))):
                log.warning(
                    "chips not in the chip map: sent with bib = chip",
                    chips=sorted(new_unmapped)[:20],
                    total_unmapped=len(self.unmapped_chips),
                )
        return len(work.passings)

    def _close_from_the_future(self, work: _Step, now_ms: int) -> None:
        """A Pi without an RTC whose clock stepped back must not hold passings until the clock catches up:
        a window opened well after `now` proves the step, so it is closed now."""
        if not work.deadlines or work.deadlines[0][0] <= now_ms + CLOCK_BACK_MS:
            return
        ahead = []
        for key in work.open:
            st = work.changed.get(key) or self._state[key]
            if st.window is not None and st.window.opened_rx_ms > now_ms + CLOCK_BACK_MS:
                ahead.append((st.window.deadline_rx_ms, st.window.opened_id, key))
        if ahead:
            log.warning("clock went back: closing dedup windows opened 'in the future'", windows=len(ahead))
        for _, _, key in sorted(ahead):
            self._close(work, key, self._get(work, key))

    def _work(self) -> _Step:
        return _Step(open=set(self._open), deadlines=list(self._deadlines))

    def _get(self, work: _Step, key: tuple[str, str]) -> _KeyState:
        if key in work.changed:
            return work.changed[key]
        old = self._state.get(key)
        st = old.copy() if old else _KeyState()
        work.changed[key] = st
        return st

    def _bib(self, work: _Step, chip: str | None, bib: str | None, rules: ReaderRules) -> str | None:
        if chip:
            cmap = rules.chip_map or _NO_MAP
            mapped = cmap.lookup(chip)
            if mapped is not None:
                return mapped
            if bib:
                return bib
            norm = cmap.normalise(chip)
            work.unmapped.add(norm)
            return norm or chip
        return bib or None

    def _emit(self, work: _Step, ts: datetime, bib: str, chip: str | None, origin: str, read_id: int) -> None:
        work.passings.append(
            NewPassing(
                timestamp=ts,
                bib=bib,
                chip=chip,
                timezone=self.stamp.timezone,
                latitude=self.stamp.latitude,
                longitude=self.stamp.longitude,
                origin=origin,
                read_id=read_id,
            )
        )

    def _close_due(self, work: _Step, rx_ms: int) -> None:
        """Emit every open window whose deadline has passed, earliest deadline first (deterministic)."""
        heap = work.deadlines
        while heap and heap[0][0] <= rx_ms:
            deadline, _opened, key = heapq.heappop(heap)
            st = work.changed.get(key) or self._state.get(key)
            if st is not None and st.window is not None and st.window.deadline_rx_ms == deadline:
                self._close(work, key, self._get(work, key))

    def _close(self, work: _Step, key: tuple[str, str], st: _KeyState) -> None:
        w = st.window
        assert w is not None
        self._emit(work, _from_ms(w.best_ms), w.bib, w.chip, "reader", w.best_id)
        st.add(w.start_ms)
        st.window = None
        work.open.discard(key)

    @staticmethod
    def _key_of(read: JournaledRead, rules: ReaderRules) -> tuple[str, str] | None:
        """The duplicate-window key of a read the windows take; None for one they do not (a manual read, a
        first/last-seen read `seen` leaves out, a read with neither chip nor bib)."""
        if read.origin == "manual" or _left_out(read, rules):
            return None
        if read.chip:
            return (read.reader, "chip:" + (rules.chip_map or _NO_MAP).normalise(read.chip))
        return (read.reader, "bib:" + read.bib) if read.bib else None

    def _take(self, work: _Step, read: JournaledRead, key: tuple[str, str] | None) -> None:
        """One read through the windows; `key` is its _key_of."""
        rules = self._rules_for(read.link)
        bib = self._bib(work, read.chip, read.bib, rules)
        if bib is None:  # a format never yields this; refuse to invent a bib
            work.suppressed += 1
            log.warning("read without chip or bib ignored", read_id=read.id, link=read.link)
            return
        if read.origin == "manual":
            self._emit(work, read.timestamp, bib, read.chip, "manual", read.id)
            return
        if _left_out(read, rules):
            work.dropped_seen += 1
            return
        assert key is not None  # manual, seen and bib-less reads returned above
        t = _ms(read.timestamp)
        w_ms = round(rules.dedup_window_s * 1000)
        hold_ms = max(w_ms, round((rules.finished_window_s or 0) * 1000))
        st = self._get(work, key)
        if w_ms > 0:
            if st.window is not None:
                w = st.window
                if rules.dedup_mode == "strongest":
                    inside, takes = t < w.start_ms + w_ms, _better(read.rssi, w.best_rssi)
                else:  # first: the window spans a window either side of its earliest read so far
                    inside, takes = w.best_ms - w_ms < t < w.best_ms + w_ms, t < w.best_ms
                if inside:
                    if takes:
                        w.best_id, w.best_rssi, w.best_ms = read.id, read.rssi, t
                        w.chip, w.bib, w.link = read.chip, bib, read.link
                        if rules.dedup_mode == "first":
                            w.start_ms = t  # the crossing is remembered at its earliest read
                    work.suppressed += 1
                    return
                self._close(work, key, st)
            if st.covers(t, w_ms, hold_ms):
                work.suppressed += 1
                return
            rx = _ms(read.received_at)
            st.window = _Window(
                start_ms=t,
                deadline_rx_ms=rx + w_ms + rules.grace_ms,
                best_id=read.id,
                best_rssi=read.rssi,
                best_ms=t,
                chip=read.chip,
                bib=bib,
                link=read.link,
                opened_rx_ms=rx,
                opened_id=read.id,
            )
            work.open.add(key)
            heapq.heappush(work.deadlines, (st.window.deadline_rx_ms, read.id, key))
            return
        if st.covers(t, w_ms, hold_ms):
            work.suppressed += 1
            return
        self._emit(work, read.timestamp, bib, read.chip, "reader", read.id)
        st.add(t)

    @property
    def open_windows(self) -> int:
        """Open duplicate windows (reads seen, passing not yet emitted): for the status page."""
        return len(self._open)


def rules_summary(rules: Mapping[str, ReaderRules]) -> dict[str, dict[str, Any]]:
    """What the status page shows per link (no chip map contents)."""
    return {
        name: {
            "dedup_window_s": r.dedup_window_s,
            "dedup_mode": r.dedup_mode,
            "ipico_seen": r.seen,
            "finished_window_s": r.finished_window_s,
            "chip_map": (r.chip_map.source if r.chip_map else None),
            "chip_map_size": len(r.chip_map) if r.chip_map else 0,
        }
        for name, r in rules.items()
    }


__all__: Sequence[str] = ("CURSOR_KEY", "ChipMap", "Pipeline", "ReaderRules", "Stamp", "rules_summary")
