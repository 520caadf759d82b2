"""`mylaps`: MYLAPS Timing & Scoring TCP/IP protocol V2 (port 3097; the decoder side connects to the gateway).

Records end at `$` (some senders add CRLF after it), fields are `@`-separated and every record ends with
`@`: `<location>@<function>@...@`. Passings come as `<location>@Passing@<passing>@...@<message number>@`,
each passing a `|`-separated list of `key=value`: `t` time HH:MM:SS.mmm (local), `c` chip, `d` date YYMMDD,
`an` antenna (a number, or an 8-bit mask from BibTag decoders), `ans` strongest antenna, `amd` amplitude in
dBm, `b` bib, and others we do not need. The receiver answers `<name>@AckPassing@<message number>@$`; until
then the sender keeps the message and sends it again with the same number, so the gateway acknowledges only
after the passings are journaled. The message number names a message, not a passing: it is the read's seq
when the message carries one passing, and no seq is claimed for a message carrying several.

Follows MYLAPS' "T&S TCP/IP V2 Protocol Documentation" (manual ENG v2021.1, published with racemap's
mylaps-to-racemap-forwarder: github.com/racemap/mylaps-to-racemap-forwarder, `docs/` and
`src/main/mylaps/consts.ts` for the function names Passing, AckPassing, Ping, GetInfo and the passing keys).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date, time
from typing import ClassVar, Literal, NamedTuple

from gateway.formats._common import DelimFramer, complete_time, decode_line, digits, field_offsets, local, number, show
from gateway.formats.base import (
    Conversation,
    Format,
    Framer,
    ParseContext,
    ParseResult,
    ReaderConversation,
    Record,
    Rejected,
    Skipped,
    parse_record,
)
from gateway.model import Read, format_ts

SERVER_NAME = "rufus-gateway"
PROTOCOL_VERSION = "Version2.1"
_TIME = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?")
_DATE = re.compile(r"(\d{2})(\d{2})(\d{2})")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_MASK = re.compile(r"[01]{8}")
_RESERVED = set("@|$=")
_ONE_PASSING = re.compile(r"([^@]*)@Passing@([^@]*)@(\d{1,12})@")  # location, the passing, message number


class Message(NamedTuple):
    """One framed record: who sent it, the function, its results and the message number (if it has one).
    A tuple: one is made per record, and a frozen dataclass's __init__ costs four object.__setattr__ calls."""

    location: str
    function: str
    results: list[ParseResult]
    number: int | None


def _antenna(value: str) -> int | None:
    """`an`: a plain antenna number, or BibTag's 8-bit mask (rightmost bit = antenna 1): the lowest set."""
    if len(value) <= 3 and digits(value):  # the usual plain number first: a mask is eight characters
        return int(value)
    if _MASK.fullmatch(value):
        bits = value[::-1]
        return bits.index("1") + 1 if "1" in bits else None
    return None


def _time_of_day(text: str) -> time:
    """`t` H:MM:SS or HH:MM:SS, with up to three decimals. The form every decoder sends, HH:MM:SS.mmm, goes
    through time.fromisoformat (C) once the characters are known to be that form and nothing else."""
    if len(text) == 12 and text[2] == ":" and text[5] == ":" and text[8] == "." and text.isascii():
        if (text[:2] + text[3:5] + text[6:8] + text[9:]).isdigit():
            return time.fromisoformat(text)  # its ValueError names the field out of range, as time() does
    return _time_of_day_general(text)


def _time_of_day_general(text: str) -> time:
    m = _TIME.fullmatch(text)
    if not m:
        raise ValueError("not HH:MM:SS.mmm")
    hh, mm, ss, frac = m.groups()
    return time(int(hh), int(mm), int(ss), int((frac or "0").ljust(3, "0")) * 1000)


@functools.lru_cache(maxsize=64)
def _day(text: str) -> date:
    """`d` YYMMDD: one parse per race day, not per passing (a ValueError is not cached: it is raised again)."""
    dm = _DATE.fullmatch(text)
    if not dm:
        raise ValueError("not YYMMDD")
    return date(2000 + int(dm.group(1)), int(dm.group(2)), int(dm.group(3)))


def _items(text: str) -> dict[str, str] | None:
    """A passing's key=value items (the last of a key wins; a value may hold '='); None when an item has
    no '='."""
    try:
        return dict(item.split("=", 1) for item in text.split("|"))
    except ValueError:
        return None


def _passing(text: str, offset: int, location: str, ctx: ParseContext, raw: str, seq: int | None) -> ParseResult:
    """One `|`-separated passing starting at byte `offset` of the record (`seq`: the message number, for a
    message that carries this one passing)."""
    values = _items(text)
    if values is None:  # an item without '=': name the first one
        item, item_off = next((i, o) for i, o in field_offsets(text, "|") if "=" not in i)
        return Rejected(f"passing item {show(item)} at byte {offset + item_off}: not key=value", raw)

    def at(key: str) -> int:
        """Byte offset of `key`'s value in the record (the last item of that key wins, as in `values`)."""
        where = [o for item, o in field_offsets(text, "|") if item.partition("=")[0] == key]
        return offset + where[-1] + len(key.encode()) + 1

    chip = values.get("c") or None
    bib = values.get("b") or None
    if chip is None and bib is None:
        return Rejected(f"passing at byte {offset} has neither c (chip) nor b (bib)", raw)
    if "t" not in values:
        return Rejected(f"passing at byte {offset} has no t (time)", raw)
    t_text = values["t"]
    try:
        tod = _time_of_day(t_text)
    except ValueError as exc:
        return Rejected(f"t {show(t_text)} at byte {at('t')}: {exc}", raw)
    if "d" in values:
        d_text = values["d"]
        try:
            day = _day(d_text)
        except ValueError as exc:
            return Rejected(f"d {show(d_text)} at byte {at('d')}: {exc}", raw)
        ts = local(day, tod, ctx.tz)
    else:
        ts = complete_time(tod, ctx)
    antenna = None
    for key in ("ans", "an"):  # the strongest antenna, where the decoder reports it, is the better one
        a_text = values.get(key)
        if a_text:
            antenna = _antenna(a_text)
            if antenna is None and not _MASK.fullmatch(a_text):
                return Rejected(f"{key} {show(a_text)} at byte {at(key)}: not an antenna number or mask", raw)
            break
    rssi = None
    r_text = values.get("amd")
    if r_text:
        signal = number(r_text)
        if isinstance(signal, str):
            return Rejected(f"amd {show(r_text)} at byte {at('amd')}: {signal}", raw)
        rssi = signal
    return Read(
        chip=chip, bib=bib, timestamp=ts, antenna=antenna, rssi=rssi, reader=location or ctx.reader, seq=seq, raw=raw
    )


def parse_message(record: bytes, ctx: ParseContext) -> Message:
    """Everything one `$`-terminated record says; never raises."""
    text, err = decode_line(record)
    if text is None:
        return Message("", "", [Rejected(err, record.decode("utf-8", errors="replace"))], None)
    raw = text
    text = text.rstrip("\r\n")
    one = _ONE_PASSING.fullmatch(text)
    if one is not None:  # the message every decoder sends: one passing; the general path below agrees on it
        location, passing, num_text = one.groups()
        number = int(num_text)
        offset = len(location) + 9 if location.isascii() else len(location.encode()) + 9  # after "@Passing@"
        return Message(location, "Passing", [_passing(passing, offset, location, ctx, raw, number)], number)
    return _parse_general(text, raw, ctx)


def _parse_general(text: str, raw: str, ctx: ParseContext) -> Message:
    """Any record, `text` without its line end: what parse_message's one-passing path must agree with."""
    parts = field_offsets(text, "@")
    if len(parts) < 2 or not _NAME.fullmatch(parts[1][0]):
        return Message("", "", [Rejected(f"not a MYLAPS message at byte 0 (starts {show(text[:16])})", raw)], None)
    location, function = parts[0][0], parts[1][0]
    # the record ends with '@': the last part is empty; the one before it is the message number, if any
    body = parts[2:-1] if parts[-1][0] == "" else parts[2:]
    if function == "Passing":
        if len(body) < 2:
            return Message(
                location, function, [Rejected(f"Passing message without passings after byte {parts[1][1]}", raw)], None
            )
        num_text, num_off = body[-1]
        if not digits(num_text) or len(num_text) > 12:
            rej = Rejected(f"message number {show(num_text)} at byte {num_off}: not a whole number", raw)
            return Message(location, function, [rej], None)
        number = int(num_text)
        passings = body[:-1]
        seq = number if len(passings) == 1 else None  # numbered reads only when the number is theirs alone
        results = [_passing(p, off, location, ctx, raw, seq) for p, off in passings]
        return Message(location, function, results, number)
    if function == "Store":
        reason = f"Store message at byte {parts[1][1]}: legacy stored passings are not supported; use Passing (V2)"
        return Message(location, function, [Rejected(reason, raw)], None)
    other_number: int | None = None  # Marker messages are numbered and acknowledged like passings
    if body and digits(body[-1][0]) and len(body[-1][0]) <= 12:
        other_number = int(body[-1][0])
    kind = {"Pong": "pong", "Ping": "ping", "Marker": "marker"}.get(function, function)
    return Message(location, function, [Skipped(kind, raw)], other_number)


def _check(value: str | None, label: str) -> None:
    if value and (_RESERVED & set(value) or not value.isprintable()):
        raise ValueError(f"{label} {value!r} cannot be written in a MYLAPS passing")


def passing_message(read: Read, ctx: ParseContext, number: int) -> bytes:
    """One read as a one-passing Passing message with message number `number`."""
    location = read.reader or ctx.reader or "Finish"
    for value, label in ((read.chip, "chip"), (read.bib, "bib"), (location, "location")):
        _check(value, label)
    if not read.chip and not read.bib:
        raise ValueError("a MYLAPS passing needs a chip or a bib")
    wall = read.timestamp.astimezone(ctx.tz)
    if not 2000 <= wall.year <= 2099:
        raise ValueError(f"year {wall.year} does not fit a YYMMDD date")
    items = [f"t={wall:%H:%M:%S}.{wall.microsecond // 1000:03d}"]
    if read.chip:
        items += [f"c={read.chip}", "ct=UH"]
    items += [f"d={wall:%y%m%d}", "l=0", "dv=1", "re=1"]
    if read.antenna is not None:
        items.append(f"an={read.antenna}")
    if read.bib:
        items.append(f"b={read.bib}")
    if read.rssi is not None:
        items.append(f"amd={read.rssi!r}")
    return f"{location}@Passing@{'|'.join(items)}@{number}@$".encode()


class MylapsFormat(Format):
    name: ClassVar[str] = "mylaps"
    default_port: ClassVar[int | None] = 3097
    gateway_role: ClassVar[Literal["connect", "listen", "either"]] = "listen"
    description: ClassVar[str] = "MYLAPS Timing&Scoring TCP/IP V2: '@' fields, '$' records, AckPassing after commit"

    def framer(self) -> Framer:
        return DelimFramer(b"$", skip_leading=b"\r\n\t ")

    def parse(self, record: bytes, ctx: ParseContext) -> ParseResult:
        results = parse_message(record, ctx).results
        if len(results) == 1:
            return results[0]
        raw = record.decode("utf-8", errors="replace")
        # one result per record is all parse() can return; losing the others silently is not an option
        return Rejected(f"message at byte 0 carries {len(results)} passings: read it through conversation()", raw)

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        return passing_message(read, ctx, read.seq or 0)

    def conversation(self, ctx: ParseContext) -> Conversation:
        return MylapsConversation(self, ctx)

    def reader_conversation(self, ctx: ParseContext) -> ReaderConversation:
        return MylapsReader(self, ctx)


@dataclass(slots=True)
class MylapsConversation(Conversation):
    """Gateway side: answer Pong/Ping/Marker at once, AckPassing a message once all its reads are journaled."""

    fmt: MylapsFormat
    ctx: ParseContext
    silence_timeout: float | None = 60.0  # keepalive() pings every 20 s; a live sender answers AckPing
    # message number -> reads of it not yet acknowledged; id of a read -> (that read, its message number).
    # By identity, not by value: ack() gets the very Read on_record made, and hashing a Read (a tuple of
    # every field) twice per passing was a tenth of this conversation's time.
    pending: dict[int, int] = field(default_factory=dict)
    _waiting: dict[int, tuple[Read, int]] = field(default_factory=dict)
    acks_sent: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)  # message numbers are not per passing: none

    def on_record(self, record: Record) -> tuple[list[ParseResult], bytes]:
        if record.oversize or record.truncated:
            return [parse_record(self.fmt, record, self.ctx)], b""
        msg = parse_message(record.data, self.ctx)
        if msg.function == "Pong":
            return msg.results, f"{SERVER_NAME}@AckPong@{PROTOCOL_VERSION}@$".encode()
        if msg.function == "Ping":
            return msg.results, f"{SERVER_NAME}@AckPing@$".encode()
        if msg.function == "Marker" and msg.number is not None:
            return msg.results, self._ack("AckMarker", msg.number)
        if msg.function == "Passing" and msg.number is not None:
            reads = [r for r in msg.results if isinstance(r, Read)]
            if not reads:  # every passing rejected: nothing to journal, and a re-send would not fix it
                return msg.results, self._ack("AckPassing", msg.number)
            self.pending[msg.number] = self.pending.get(msg.number, 0) + len(reads)
            for read in reads:
                self._waiting[id(read)] = (read, msg.number)
        return msg.results, b""

    def ack(self, read: Read) -> bytes:
        entry = self._waiting.get(id(read))
        if entry is None or entry[0] is not read:  # not a read of ours waiting (or already acknowledged)
            return b""
        del self._waiting[id(read)]
        number = entry[1]
        left = self.pending.get(number, 1) - 1
        if left > 0:
            self.pending[number] = left
            return b""
        self.pending.pop(number, None)
        return self._ack("AckPassing", number)

    def _ack(self, what: str, number: int) -> bytes:
        self.acks_sent += 1
        return f"{SERVER_NAME}@{what}@{number}@$".encode()

    def keepalive(self) -> bytes:
        return f"{SERVER_NAME}@Ping@$".encode()


_ACK = re.compile(rb"[^@$]*@AckPassing@(\d+)@")
_PING = re.compile(rb"[^@$]*@Ping@")


@dataclass(slots=True)
class MylapsReader(ReaderConversation):
    """The T&S side: one passing per message, numbered; keeps each until AckPassing, re-sends with its number."""

    fmt: MylapsFormat
    ctx: ParseContext
    next_number: int = 1
    numbers: dict[tuple[str | None, str], int] = field(default_factory=dict)  # (chip or bib, time) -> number
    unacked: dict[int, Read] = field(default_factory=dict)
    _buf: bytearray = field(default_factory=bytearray)

    @property
    def location(self) -> str:
        return self.ctx.reader or "Finish"

    def greeting(self) -> bytes:
        return f"{self.location}@Pong@$".encode()

    def encode(self, read: Read) -> bytes:
        key = (read.chip if read.chip is not None else read.bib, format_ts(read.timestamp))
        number = self.numbers.get(key)
        if number is None:  # a re-send of an unacknowledged passing keeps its number
            number = self.numbers[key] = self.next_number
            self.next_number += 1
        self.unacked[number] = read
        return passing_message(read, self.ctx, number)

    def heartbeat(self) -> bytes:
        return f"{self.location}@Pong@$".encode()

    def on_bytes(self, data: bytes) -> tuple[list[Read], bytes]:
        self._buf += data
        acked: list[Read] = []
        answer = bytearray()
        while (end := self._buf.find(b"$")) >= 0:
            message = bytes(self._buf[:end]).strip()
            del self._buf[: end + 1]
            if m := _ACK.fullmatch(message):
                read = self.unacked.pop(int(m.group(1)), None)
                if read is not None:
                    acked.append(read)
            elif _PING.fullmatch(message):
                answer += f"{self.location}@AckPing@$".encode()
        if len(self._buf) > 4096:
            self._buf.clear()
        return acked, bytes(answer)

    @property
    def needs_ack(self) -> bool:
        return True


FORMAT = MylapsFormat()
