"""`raceresult`: RACE RESULT decoder TCP protocol 3.2, push mode.

The gateway connects to the decoder (port 3601), asks for protocol 3.2 and pushed passings, and gets one
`#P;` line per passing: 20 `;`-separated fields, CRLF. Hits and MaxRSSI are hexadecimal, everything else
decimal. Without GPS the date is `0000-00-00` (then `0000-00-01` after 24 h): a day counter, not a date, so
the time of day is completed from the gateway's day. Passings are numbered by the decoder; a gap is asked
for again with `<from>:<count>`, which the decoder answers with the same fields minus the `#P;` prefix and
an empty line. The greeting ends with `PASSINGS`, answered `PASSINGS;<count>;<file number>`: passings logged
just before a hang-up, with none after them to show the gap, are fetched from that count on reconnect.

Follows RACE RESULT's published decoder TCP protocol (port 3601, protocol 3.2, 20-field passing records), as
the open metarace decoder implements it (github.com/ndf-zz/metarace, `src/metarace/decoder/rrs.py`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from typing import ClassVar, Literal

from gateway.formats._common import (
    LineFormat,
    complete_time,
    decode_line,
    digits,
    local,
    now_of,
    show,
    signal_byte,
)
from gateway.formats.base import (
    Conversation,
    ParseContext,
    ParseResult,
    ReaderConversation,
    ReaderHolds,
    Record,
    Rejected,
    Skipped,
    parse_record,
)
from gateway.model import Read

PROTOCOL = "3.2"
N_FIELDS = 20
# field indexes within a passing (after the `#P;` prefix)
F_NO, F_BIB, F_DATE, F_TIME, F_HITS, F_RSSI, F_BOXNAME, F_ANTENNA, F_BOXID = 0, 1, 2, 3, 5, 6, 16, 18, 19

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_TIME = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?")
_RESPONSE = re.compile(r"[A-Z][A-Z0-9_ ]*")
_HEX = re.compile(r"[0-9A-Fa-f]{1,8}")
_REFETCH = re.compile(rb"(\d+):(\d+)")


def _parse_time(text: str) -> time | None:
    m = _TIME.fullmatch(text)
    if not m:
        return None
    hh, mm, ss, frac = m.groups()
    try:
        return time(int(hh), int(mm), int(ss), int((frac or "0").ljust(3, "0")) * 1000)
    except ValueError:
        return None


def parse_passing(text: str, offset: int, ctx: ParseContext, raw: str) -> ParseResult:
    """The 20 passing fields starting at byte `offset` of the line."""
    values = text.split(";")
    if len(values) != N_FIELDS:
        return Rejected(f"passing at byte {offset} has {len(values)} fields, want {N_FIELDS}", raw)

    def at(index: int) -> int:
        """Byte offset of field `index` in the line: worked out only for a message."""
        return offset + sum(len(v.encode()) + 1 for v in values[:index])

    no_text = values[F_NO]
    if not digits(no_text):
        return Rejected(f"PassingNo {show(no_text)} at byte {at(F_NO)}: not a decimal number", raw)
    chip = values[F_BIB]
    if not chip or not chip.isprintable():
        return Rejected(f"Bib/transponder {show(chip)} at byte {at(F_BIB)}: empty or not printable", raw)
    tod = _parse_time(values[F_TIME])
    if tod is None:
        return Rejected(f"Time {show(values[F_TIME])} at byte {at(F_TIME)}: not hh:mm:ss.kkk", raw)
    date_text = values[F_DATE]
    m = _DATE.fullmatch(date_text)
    if not m:
        return Rejected(f"Date {show(date_text)} at byte {at(F_DATE)}: not YYYY-MM-DD", raw)
    year, month, day = (int(g) for g in m.groups())
    if year == 0:  # no GPS fix: 0000-00-0N counts days since the decoder started, it is not a date
        ts = complete_time(tod, ctx)
    else:
        try:
            ts = local(date(year, month, day), tod, ctx.tz)
        except ValueError as exc:
            return Rejected(f"Date {show(date_text)} at byte {at(F_DATE)}: {exc}", raw)
    for idx, name in ((F_HITS, "Hits"), (F_RSSI, "MaxRSSI")):
        value = values[idx]
        if value and not _HEX.fullmatch(value):
            return Rejected(f"{name} {show(value)} at byte {at(idx)}: not hexadecimal", raw)
    rssi_text = values[F_RSSI]
    rssi = float(int(rssi_text, 16)) if rssi_text else None
    ant_text = values[F_ANTENNA]
    antenna: int | None = None
    if ant_text:
        if not digits(ant_text) or len(ant_text) > 3:
            return Rejected(f"MaxRSSIAntenna {show(ant_text)} at byte {at(F_ANTENNA)}: not an antenna number", raw)
        antenna = int(ant_text)
    reader = values[F_BOXNAME] or values[F_BOXID] or ctx.reader
    return Read(chip=chip, bib=None, timestamp=ts, antenna=antenna, rssi=rssi, reader=reader, seq=int(no_text), raw=raw)


class RaceResultFormat(LineFormat):
    name: ClassVar[str] = "raceresult"
    default_port: ClassVar[int | None] = 3601
    gateway_role: ClassVar[Literal["connect", "listen", "either"]] = "connect"
    description: ClassVar[str] = "RACE RESULT decoder protocol 3.2, pushed #P; passings, refetch by number"

    def decode(self, record: bytes) -> str:
        text, _err = decode_line(record)
        # the decoder speaks ISO-8859-1; a stray high byte in a box name is not worth losing a passing
        return text if text is not None else record.decode("latin-1")

    def parse_line(self, text: str, ctx: ParseContext) -> ParseResult:
        raw = text
        if text.startswith("#P;"):
            return parse_passing(text[3:], 3, ctx, raw)
        head = text.split(";", 1)[0]
        if digits(head):  # an answer to `<from>:<count>`
            return parse_passing(text, 0, ctx, raw)
        if head == "GETSTATUS":
            return Skipped("status", raw)
        if head == "PASSINGS":
            return _holds(text, raw)
        if head and _RESPONSE.fullmatch(head):
            return Skipped("response", raw)
        return Rejected(f"not a passing or a decoder answer at byte 0 (starts {show(text[:12])})", raw)

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        return b"#P;" + _fields(read, ctx) + b"\r\n"

    def conversation(self, ctx: ParseContext) -> Conversation:
        return RaceResultConversation(self, ctx)

    def reader_conversation(self, ctx: ParseContext) -> ReaderConversation:
        return RaceResultReader(self, ctx)


def _holds(text: str, raw: str) -> Skipped:
    """`PASSINGS;<count>;<file number>`, the answer to `PASSINGS`: how many passings the current file holds."""
    parts = text.strip().split(";")
    if len(parts) >= 2 and digits(parts[1]) and len(parts[1]) <= 9:
        generation = parts[2] if len(parts) >= 3 and parts[2] else None
        return ReaderHolds("response", raw, count=int(parts[1]), generation=generation)
    return Skipped("response", raw)


def _fields(read: Read, ctx: ParseContext) -> bytes:
    if read.seq is not None and read.seq < 0:
        raise ValueError(f"passing number {read.seq} is negative")
    if not read.chip or ";" in read.chip or not read.chip.isprintable():
        raise ValueError(f"transponder {read.chip!r} cannot be written as a RACE RESULT field")
    wall = read.timestamp.astimezone(ctx.tz)
    rssi = "" if read.rssi is None else f"{signal_byte(read.rssi):02X}"
    antenna = "" if read.antenna is None else str(read.antenna)
    box = read.reader or ""
    if ";" in box:
        raise ValueError(f"box name {box!r} cannot contain ';'")
    parts = [
        str(read.seq or 0),  # unnumbered (a sample line): 0, which no decoder assigns
        read.chip,
        wall.strftime("%Y-%m-%d"),
        wall.strftime("%H:%M:%S.") + f"{wall.microsecond // 1000:03d}",
        "0",  # EventID
        "1",  # Hits
        rssi,
        "",  # InternalData
        "0",  # IsActive
        *[""] * 7,  # Channel, LoopID, LoopOnly, WakeupCounter, Battery, Temperature, InternalActiveData
        box,
        "1",  # FileNumber
        antenna,
        "",  # BoxId: the box name already names the reader
    ]
    return ";".join(parts).encode("utf-8")


def settime_command(now: datetime, tz: tzinfo) -> bytes:
    """`SETTIME;<YYYY-MM-DD>;<hh:mm:ss>`: the decoder's clock, in its own zone, to the nearest second.

    Follows the set-time command of the RACE RESULT decoder's public TCP protocol description (`SETTIME;<date>;
    <time>`, CRLF, like every command); whole seconds, as the public examples send it.
    """
    wall = (now + timedelta(microseconds=500_000)).astimezone(tz)
    return f"SETTIME;{wall:%Y-%m-%d};{wall:%H:%M:%S}\r\n".encode()


_SETTIME = re.compile(rb"SETTIME;(\d{4}-\d{2}-\d{2});(\d{2}:\d{2}:\d{2})(?:\.\d{1,3})?")


@dataclass(slots=True)
class RaceResultConversation(Conversation):
    """Gateway side: ask for push mode on connect, notice gaps in passing numbers and ask for them again."""

    fmt: RaceResultFormat
    ctx: ParseContext
    silence_timeout: float | None = 30.0  # keepalive() makes the decoder answer, so silence means a dead link
    last_seq: int | None = None  # highest passing number seen on this connection
    gaps: list[tuple[int, int]] = field(default_factory=list)  # (first missing, count), in order noticed

    def greeting(self) -> bytes:
        return f"SETPROTOCOL;{PROTOCOL}\r\nSETPUSHPASSINGS;1;0\r\nPASSINGS\r\n".encode()

    def on_record(self, record: Record) -> tuple[list[ParseResult], bytes]:
        result = parse_record(self.fmt, record, self.ctx)
        if isinstance(result, Read) and result.seq is not None:
            # Only noted here: the ingest asks for the gap with refetch() once, after journaling what came.
            if self.last_seq is not None and result.seq > self.last_seq + 1:
                self.gaps.append((self.last_seq + 1, result.seq - self.last_seq - 1))
            if self.last_seq is None or result.seq > self.last_seq:
                self.last_seq = result.seq
        return [result], b""

    def refetch(self, first_seq: int, count: int) -> bytes:
        return f"{first_seq}:{count}\r\n".encode()

    def keepalive(self) -> bytes:
        return b"GETSTATUS\r\n"

    def set_time(self, now: datetime) -> bytes:
        return settime_command(now, self.ctx.tz)


@dataclass(slots=True)
class RaceResultReader(ReaderConversation):
    """A decoder: numbers passings from 1, pushes them, answers `<from>:<count>` and the setup commands."""

    fmt: RaceResultFormat
    ctx: ParseContext
    history: dict[int, Read] = field(default_factory=dict)
    next_seq: int = 1
    refetches: list[tuple[int, int]] = field(default_factory=list)
    clock_set: list[datetime] = field(default_factory=list)  # each SETTIME received, as an aware instant
    clock_offset: timedelta = field(default_factory=timedelta)  # applied to the decoder's own clock (GETSTATUS)
    pushing: bool = False  # SETPUSHPASSINGS;1 received on this connection: passings may be pushed
    _buf: bytearray = field(default_factory=bytearray)
    _resent: list[Read] = field(default_factory=list)

    def take_resent(self) -> list[Read]:
        out, self._resent = self._resent, []
        return out

    @property
    def ready(self) -> bool:
        return self.pushing

    def connection_started(self) -> None:
        self.pushing = False
        self._buf.clear()

    def greeting(self) -> bytes:
        return b""

    def encode(self, read: Read) -> bytes:
        numbered = dataclasses.replace(read, seq=self.next_seq, raw="")
        self.history[self.next_seq] = numbered
        self.next_seq += 1
        return self.fmt.format(numbered, self.ctx)

    def heartbeat(self) -> bytes:
        return b""

    def on_bytes(self, data: bytes) -> tuple[list[Read], bytes]:
        self._buf += data
        out = bytearray()
        while (end := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:end]).strip()
            del self._buf[: end + 1]
            out += self._answer(line)
        if len(self._buf) > 4096:  # a gateway does not send lines this long; do not grow without bound
            self._buf.clear()
        return [], bytes(out)

    def _answer(self, line: bytes) -> bytes:
        m = _REFETCH.fullmatch(line)
        if m:
            first, count = int(m.group(1)), int(m.group(2))
            self.refetches.append((first, count))
            again = [self.history[n] for n in range(first, first + count) if n in self.history]
            self._resent += again
            lines = [_fields(read, self.ctx) + b"\r\n" for read in again]
            return b"".join(lines) + b"\r\n"
        if m := _SETTIME.fullmatch(line):
            try:
                wall = datetime.fromisoformat(f"{m.group(1).decode()}T{m.group(2).decode()}")
            except ValueError:
                return b"SETTIME;ERROR\r\n"
            wall = wall.replace(tzinfo=self.ctx.tz)
            self.clock_set.append(wall)
            self.clock_offset = wall - now_of(self.ctx)
            return b"SETTIME;OK\r\n"
        if line.startswith(b"SETPROTOCOL"):
            return f"SETPROTOCOL;{PROTOCOL}\r\n".encode()
        if line.startswith(b"SETPUSHPASSINGS"):
            parts = line.split(b";")
            self.pushing = len(parts) >= 2 and parts[1] == b"1"
            return b";".join([b"SETPUSHPASSINGS", *parts[1:3]]) + b"\r\n"
        if line == b"PASSINGS":
            return f"PASSINGS;{self.next_seq - 1};1\r\n".encode()
        if line == b"GETSTATUS":
            now = (now_of(self.ctx) + self.clock_offset).astimezone(self.ctx.tz)
            return (
                f"GETSTATUS;{now:%Y-%m-%d};{now:%H:%M:%S}.000;1;00000001;1;1;0;0,0;1;100;30;30;0;0;;;;;1;0;0;0;0;\r\n"
            ).encode()
        return b""


FORMAT = RaceResultFormat()
