"""The generated race is deterministic in its seed and looks like a finish line."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from gateway.model import to_utc_ms
from gateway.simulator import Race

GUN = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_same_seed_same_race_other_seed_other_race() -> None:
    a = Race.generate(200, 42, GUN)
    assert a == Race.generate(200, 42, GUN)
    assert a != Race.generate(200, 43, GUN)


def test_reads_are_sorted_numbered_and_on_the_millisecond() -> None:
    reads = Race.generate(300, 7, GUN, waves=3)
    assert [r.seq for r in reads] == list(range(1, len(reads) + 1))
    assert [r.timestamp for r in reads] == sorted(r.timestamp for r in reads)
    assert all(r.timestamp == to_utc_ms(r.timestamp) and r.timestamp.microsecond % 10_000 == 0 for r in reads)
    assert all(r.timestamp >= GUN + timedelta(minutes=14) for r in reads)


def test_crossings_have_several_reads_with_signal_rising_then_falling() -> None:
    reads = Race.generate(400, 9, GUN, miss_rate=0.0, unseen_rate=0.0, antennas=4)
    by_chip = defaultdict(list)
    for r in reads:
        by_chip[r.chip].append(r)
    assert len(by_chip) == 400
    assert {len(v) for v in by_chip.values()} <= set(range(3, 9))
    assert {r.antenna for r in reads} == {1, 2, 3, 4}
    peaked = 0
    for crossing in by_chip.values():
        assert crossing[-1].timestamp - crossing[0].timestamp < timedelta(seconds=2)
        rssi = [r.rssi or 0.0 for r in crossing]
        top = rssi.index(max(rssi))
        peaked += 0 < top < len(rssi) - 1 or len(rssi) <= 3
    assert peaked > 0.8 * len(by_chip)  # the strongest read is in the middle of the crossing, mostly


def test_missed_reads_and_unseen_runners() -> None:
    full = Race.generate(1000, 5, GUN, miss_rate=0.0, unseen_rate=0.0)
    lossy = Race.generate(1000, 5, GUN, miss_rate=0.2, unseen_rate=0.02)
    assert 0.6 * len(full) < len(lossy) < 0.9 * len(full)
    assert 950 < len({r.chip for r in lossy}) < 1000


def test_waves_start_apart() -> None:
    race = Race(600, 3, GUN, waves=3, wave_gap_s=600)
    runners = race.field()
    assert {r.wave for r in runners} == {0, 1, 2}
    first = {w: min(r.finish for r in runners if r.wave == w and r.finish) for w in range(3)}
    assert first[2] - GUN >= timedelta(minutes=20 + 14)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        Race(1, 1, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="chip style"):
        Race(1, 1, GUN, chip_style="morse")
