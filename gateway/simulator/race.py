"""A race's worth of reads from a seeded RNG: the same seed gives the same race, read for read.

What a finish mat really produces: runners start in waves, finish times follow a skewed (log-normal)
distribution, each crossing is seen several times over about a second on several antennas with the signal
rising then falling, some of those reads are missed, and now and then a runner is not seen at all.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from gateway.model import Read, to_utc_ms

GRID_MS = 10  # timestamps on a 10 ms grid: the coarsest precision any supported protocol carries (Ipico)

# Chip numbers each protocol can carry. Formats validate chips; the simulator must produce ones they accept.
CHIP_STYLES: dict[str, Callable[[int], str]] = {
    "digits": lambda bib: f"{58000000000 + bib:012d}",  # 12 digits: also valid hex (Ipico) and a number (Ultra)
    "hex": lambda bib: f"{0x058000000000 + bib:012X}",
    "alnum7": lambda bib: f"SIM{bib:04d}"[:7] if bib < 10000 else f"S{bib:06d}",  # MYLAPS/ChronoTrack-like
}
DEFAULT_CHIP_STYLE = "digits"
# protocols whose chip field is narrower than 12 digits
FORMAT_CHIP_STYLES: dict[str, str] = {}


def chip_style_for(format_name: str) -> str:
    return FORMAT_CHIP_STYLES.get(format_name, DEFAULT_CHIP_STYLE)


@dataclass(frozen=True)
class Runner:
    bib: str
    chip: str
    wave: int
    finish: datetime | None  # None: never seen at the line (DNF, or the mat missed the runner entirely)


@dataclass(frozen=True)
class Race:
    """Parameters of a simulated race; `reads()` is deterministic in them."""

    runners: int
    seed: int
    start: datetime  # the gun of wave 0 (aware)
    waves: int = 1
    wave_gap_s: float = 120.0
    median_s: float = 25 * 60.0  # median finish time (a 5 km fun run)
    spread: float = 0.18  # log-normal sigma
    fastest_s: float = 14 * 60.0
    antennas: int = 4
    reads_per_crossing: tuple[int, int] = (3, 8)
    miss_rate: float = 0.1  # each individual read missed
    unseen_rate: float = 0.005  # a runner the mat never sees
    chip_style: str = DEFAULT_CHIP_STYLE
    first_bib: int = 1
    _rng: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("race start must be an aware datetime")
        if self.runners < 0:
            raise ValueError("runners must be >= 0")
        if self.chip_style not in CHIP_STYLES:
            raise ValueError(f"unknown chip style {self.chip_style!r} (known: {', '.join(CHIP_STYLES)})")

    @classmethod
    def generate(cls, runners: int, seed: int, start: datetime, **options: object) -> list[Read]:
        """The reads of a race, sorted by time, numbered 1..n in `seq` (the simulated reader's counter)."""
        return cls(runners, seed, start, **options).reads()  # type: ignore[arg-type]

    def field(self) -> list[Runner]:
        rng = random.Random(f"{self.seed}:field")
        chip = CHIP_STYLES[self.chip_style]
        out = []
        per_wave = max(1, math.ceil(self.runners / max(1, self.waves)))
        mu = math.log(self.median_s)
        for i in range(self.runners):
            bib = self.first_bib + i
            wave = min(i // per_wave, self.waves - 1)
            duration = max(self.fastest_s, rng.lognormvariate(mu, self.spread))
            seen = rng.random() >= self.unseen_rate
            finish = self.start + timedelta(seconds=wave * self.wave_gap_s + duration) if seen else None
            out.append(Runner(str(bib), chip(bib), wave, finish))
        return out

    def reads(self) -> list[Read]:
        rng = random.Random(f"{self.seed}:reads")
        reads: list[Read] = []
        for runner in self.field():
            if runner.finish is None:
                continue
            n = rng.randint(*self.reads_per_crossing)
            peak = rng.uniform(-52.0, -38.0)
            dwell_ms = rng.randint(400, 1200)  # time on the mat
            kept: list[Read] = []
            for k in range(n):
                # the signal rises as the chip approaches the antenna and falls as it leaves
                frac = (k + 0.5) / n
                rssi = round(peak - 24.0 * abs(frac - 0.5) * 2 + rng.uniform(-2.0, 2.0))
                at_ms = int(frac * dwell_ms) // GRID_MS * GRID_MS
                ts = to_utc_ms(runner.finish + timedelta(milliseconds=at_ms - dwell_ms // 2))
                ts = ts.replace(microsecond=ts.microsecond // (GRID_MS * 1000) * GRID_MS * 1000)
                if kept and ts <= kept[-1].timestamp:
                    ts = kept[-1].timestamp + timedelta(milliseconds=GRID_MS)
                read = Read(
                    chip=runner.chip,
                    bib=runner.bib,
                    timestamp=ts,
                    antenna=rng.randint(1, max(1, self.antennas)),
                    rssi=float(rssi),
                )
                if rng.random() < self.miss_rate and k != n // 2:  # the strongest read is rarely missed
                    continue
                kept.append(read)
            reads.extend(kept)
        reads.sort(key=lambda r: (r.timestamp, r.chip or ""))
        return [_with_seq(r, i + 1) for i, r in enumerate(reads)]


def _with_seq(read: Read, seq: int) -> Read:
    return Read(read.chip, read.bib, read.timestamp, read.antenna, read.rssi, read.reader, seq, read.raw)
