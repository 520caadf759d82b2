"""Pieces shared by the format modules: a delimiter framer, the line-format base, time-of-day completion,
field helpers.

Still pure: the clock comes from ParseContext.now, never from the system here unless the context
leaves it unset (then `datetime.now(UTC)` is the documented fallback).
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from gateway.formats.base import MAX_RECORD, Format, Framer, ParseContext, ParseResult, Record, Rejected
from gateway.model import to_utc_ms


class DelimFramer(Framer):
    """Records end at any byte of `terminators`; empty records (CRLF's second half, blank lines) are dropped.

    A record longer than MAX_RECORD is emitted once as `oversize` holding its first MAX_RECORD bytes; the rest
    is discarded up to the next terminator, so a 1 MB line never sits in memory whole.
    """

    def __init__(self, terminators: bytes = b"\r\n", skip_leading: bytes = b"") -> None:
        self._term_re = re.compile(b"[" + re.escape(terminators) + b"]")
        # bytes dropped at the start of a record (the CRLF some senders put after a `$` terminator)
        self._skip = skip_leading
        self._buf = bytearray()
        self._start = 0  # stream offset of _buf[0]
        self._pos = 0  # stream offset of the next byte fed
        self._discarding = False  # inside an oversize record, waiting for its terminator

    def feed(self, data: bytes) -> list[Record]:
        out: list[Record] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._skip and not self._buf and not self._discarding:
                while pos < end and data[pos] in self._skip:
                    pos += 1
                if pos == end:
                    break
            m = self._term_re.search(data, pos)
            stop = m.start() if m else end
            if m is not None and not self._buf and not self._discarding and stop - pos <= MAX_RECORD:
                # a whole record inside this chunk (nearly every one): straight out, no copy through _buf
                if stop > pos:
                    out.append(Record(bytes(data[pos:stop]), self._pos + pos))
                pos = stop + 1
                continue
            if stop > pos and not self._discarding:
                if not self._buf:
                    self._start = self._pos + pos
                room = MAX_RECORD - len(self._buf)
                if stop - pos > room:
                    self._buf += data[pos : pos + room]
                    out.append(Record(bytes(self._buf), self._start, oversize=True))
                    self._buf.clear()
                    self._discarding = True
                else:
                    self._buf += data[pos:stop]
            if m is None:
                break
            if self._discarding:
                self._discarding = False
            elif self._buf:
                out.append(Record(bytes(self._buf), self._start))
            self._buf.clear()
            pos = stop + 1
        self._pos += end
        return out

    def flush(self) -> list[Record]:
        out: list[Record] = []
        if self._buf and not self._discarding:
            out.append(Record(bytes(self._buf), self._start, truncated=True))
        self._buf.clear()
        self._discarding = False
        return out


def now_of(ctx: ParseContext) -> datetime:
    return ctx.now if ctx.now is not None else datetime.now(UTC)


def local(day: date, tod: time, tz: tzinfo) -> datetime:
    """A wall-clock time in `tz` as an aware UTC datetime (ms)."""
    return to_utc_ms(datetime.combine(day, tod, tzinfo=tz))


def complete_time(tod: time, ctx: ParseContext) -> datetime:
    """A reader time-of-day (no date: no GPS fix, or a protocol that never sends one) as a UTC instant.

    With ctx.date the day is given. Otherwise it is the gateway's day in the reader's zone, shifted by one
    when that puts the read more than 12 h away from now: 23:59:58 seen at 00:00:03 happened yesterday, and
    00:00:01 from a reader whose clock runs a little ahead of the gateway's 23:59:59 belongs to tomorrow.
    """
    if ctx.date is not None:
        return local(ctx.date, tod, ctx.tz)
    now_local = now_of(ctx).astimezone(ctx.tz)
    candidate = datetime.combine(now_local.date(), tod, tzinfo=ctx.tz)
    naive_delta = candidate.replace(tzinfo=None) - now_local.replace(tzinfo=None)
    if naive_delta > timedelta(hours=12):
        candidate = datetime.combine(now_local.date() - timedelta(days=1), tod, tzinfo=ctx.tz)
    elif naive_delta < -timedelta(hours=12):
        candidate = datetime.combine(now_local.date() + timedelta(days=1), tod, tzinfo=ctx.tz)
    return to_utc_ms(candidate)


def decode_line(data: bytes) -> tuple[str | None, str]:
    """(text, error): the record as text, or None and a reason naming the first non-ASCII/UTF-8 byte."""
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text at byte {exc.start}"


class LineFormat(Format):
    """A reader that sends one record per line (CR, LF or CRLF) of text: the framer and the decoding every such
    format shares, so each one writes only `parse_line`. Bytes that are not text come back Rejected naming the
    first bad byte, the raw record kept for inspection; a format whose reader speaks another charset for some
    fields (RACE RESULT's ISO-8859-1 box names) overrides `decode`."""

    def framer(self) -> Framer:
        return DelimFramer(b"\r\n")

    def decode(self, record: bytes) -> str | Rejected:
        text, err = decode_line(record)
        if text is None:
            return Rejected(err, record.decode("utf-8", errors="replace"))
        return text

    def parse(self, record: bytes, ctx: ParseContext) -> ParseResult:
        text = self.decode(record)
        if isinstance(text, Rejected):
            return text
        return self.parse_line(text, ctx)

    @abstractmethod
    def parse_line(self, text: str, ctx: ParseContext) -> ParseResult:
        """One decoded line (terminator removed; offsets in messages are byte offsets into it). Never raises."""


def field_offsets(text: str, sep: str) -> list[tuple[str, int]]:
    """Split on `sep`, keeping each field's byte offset within the line (text is UTF-8)."""
    out: list[tuple[str, int]] = []
    pos = 0
    if text.isascii():  # the usual line: characters are bytes, no encoding per field
        for part in text.split(sep):
            out.append((part, pos))
            pos += len(part) + len(sep)
        return out
    for part in text.split(sep):
        out.append((part, pos))
        pos += len(part.encode("utf-8")) + len(sep.encode("utf-8"))
    return out


def show(value: str, limit: int = 40) -> str:
    """A field value for a one-line message: quoted, control characters escaped, long values cut."""
    shown = value if len(value) <= limit else value[:limit] + "..."
    return repr(shown)


def number(text: str) -> float | str:
    """A signal figure (csv's rssi, MYLAPS' amd) as a float, or why it is not one: NaN and infinities, which
    `float` accepts, are refused like any other word."""
    try:
        value = float(text)
    except ValueError:
        return "not a number"
    return value if math.isfinite(value) else "not a finite number"


def signal_byte(rssi: float | None) -> int:
    """An RSSI as the 0-255 signal level IPICO and RACE RESULT send. A negative value is a dBm figure (from the
    simulator or another reader): it becomes 255 + dBm, so a stronger read still has the larger level."""
    if rssi is None:
        return 0
    level = int(rssi) if rssi >= 0 else 255 + int(rssi)
    return min(max(level, 0), 255)


def digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and friends, which int() then refuses."""
    return text.isascii() and text.isdigit()
