"""The two values that cross the gateway: a Read (what a reader saw) and a Passing (what the cloud gets)."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime

_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _in_utc(ts: datetime) -> datetime:
    if ts.tzinfo is UTC:  # the common case (every parser's output) skips the conversion
        return ts
    if ts.tzinfo is None:
        raise ValueError("naive datetime: a reader time must carry its zone")
    return ts.astimezone(UTC)


def to_utc_ms(ts: datetime) -> datetime:
    """Normalise an aware datetime to UTC, truncated to whole milliseconds (the cloud's precision)."""
    ts = _in_utc(ts)
    extra = ts.microsecond % 1000
    return ts.replace(microsecond=ts.microsecond - extra) if extra else ts


def format_ts(ts: datetime) -> str:
    """`YYYY-MM-DDTHH:mm:ss.sssZ`, always milliseconds, always `Z` (the cloud's only timestamp form).

    isoformat (C, zero-pads the year to four digits; cutting it at the milliseconds truncates as to_utc_ms
    does) rather than strftime: this runs for every read and passing, and strftime was a sixth of the
    ingest's time (py-spy)."""
    text = _in_utc(ts).isoformat()  # ...T09:15:02+00:00, or ...T09:15:02.123456+00:00 (a timespec argument costs 2x)
    return text[:19] + ".000Z" if len(text) == 25 else text[:23] + "Z"


def parse_ts(text: str) -> datetime:
    """Inverse of format_ts; strict, so a malformed cloud timestamp is noticed rather than guessed."""
    if not _TS_RE.match(text):
        raise ValueError(f"not a YYYY-MM-DDTHH:mm:ss.sssZ timestamp: {text!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def is_cloud_ts(text: str) -> bool:
    return bool(_TS_RE.match(text))


@dataclass(frozen=True, slots=True, init=False)
class Read:
    """One detection as a reader reported it. `timestamp` is the reader's time, aware, UTC, ms precision."""

    chip: str | None
    bib: str | None
    timestamp: datetime
    antenna: int | None = None
    rssi: float | None = None
    reader: str | None = None  # the reader's own id where the protocol has one, else the link's name
    seq: int | None = None  # the reader's sequence number where the protocol has one
    raw: str = ""
    # first/last-seen where the reader reports presence that way (IPICO FS/LS mode): "first", "last", or
    # "both" for a tag seen once; None for an ordinary read. Journaled, so `[reader] ipico_seen` can pick one.
    seen: str | None = None
    # the reader's per-channel decode counters (IPICO I/Q), kept as the reader sent them: not signal strength
    counters: tuple[int, int] | None = None

    def __init__(
        self,
        chip: str | None,
        bib: str | None,
        timestamp: datetime,
        antenna: int | None = None,
        rssi: float | None = None,
        reader: str | None = None,
        seq: int | None = None,
        raw: str = "",
        seen: str | None = None,
        counters: tuple[int, int] | None = None,
    ) -> None:
        # What frozen=True's generated __init__ does (object.__setattr__ per field), through the slots' own
        # descriptors: half the cost, and every parser builds one Read per record (py-spy: a tenth of the
        # csv parser's time). Still frozen afterwards; tests/unit/test_foundation.py holds the signature to
        # the fields.
        s = _READ_SLOTS
        s[0](self, chip)
        s[1](self, bib)
        s[2](self, timestamp)
        s[3](self, antenna)
        s[4](self, rssi)
        s[5](self, reader)
        s[6](self, seq)
        s[7](self, raw)
        s[8](self, seen)
        s[9](self, counters)


_READ_SLOTS = tuple(getattr(Read, f.name).__set__ for f in fields(Read))


@dataclass(frozen=True, slots=True)
class Passing:
    """A passing exactly as the cloud's `passings_list` item allows (no other keys)."""

    timestamp: datetime
    num_passing: int
    bib: str
    chip: str | None = None
    participant_id: str | None = None
    status: str | None = None
    timezone: str | None = None
    gender: str | None = None
    latitude: float | None = None
    longitude: float | None = None
