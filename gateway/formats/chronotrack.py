"""`chronotrack`: ChronoTrack Socket Protocol 1 (CTP01), port 61611.

The reader (controller) connects to the scoring side: the gateway listens and greets with
`<program>~<version>~CTP01`; the reader answers `<name>~<version>~<n>` and n `key=value` settings, then the
gateway says `start` and tag observations stream in, `~`-separated, CRLF:
`CT01_33~<line no>~<location>~<tag>~<time>~<read count>~<reader id>~<antenna port>` (CT01_13 alike).
The time is whatever time-format the reader runs: `HH:MM:SS.hh` (no date), ISO local, unix epoch, or
milliseconds since local midnight; all four are recognised by shape. Tag `guntime` is a gun time and
`newlocation` a location announcement, not reads. `ping` is answered with `ack~ping`; a gap in line
numbers is asked for again with `start~<location>~<first>`, which makes the reader resume from there.

Follows ChronoTrack Socket Protocol 1 as public forwarders implement it: racemap's
chronotrack-to-racemap-forwarder (github.com/racemap/chronotrack-to-racemap-forwarder, `src/consts.ts` and
`src/forwarder.ts`: the `~` fields, CRLF, the greeting, `ack~ping`, CT01_13 / CT01_33, the time formats).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import ClassVar, Literal

from gateway import __version__
from gateway.formats._common import LineFormat, complete_time, digits, field_offsets, local, show
from gateway.formats.base import (
    Conversation,
    ParseContext,
    ParseResult,
    ReaderConversation,
    Record,
    Rejected,
    Skipped,
    parse_record,
)
from gateway.model import Read, to_utc_ms

TAG_FORMATS = ("CT01_33", "CT01_13")
N_FIELDS = 8
F_SEQ, F_LOCATION, F_TAG, F_TIME, F_COUNT, F_READER, F_ANTENNA = 1, 2, 3, 4, 5, 6, 7
DEFAULT_LOCATION = "finish"
MS_PER_DAY = 86_400_000

_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?")
_NORMAL = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,3}))?")
_UNIX = re.compile(r"(\d{1,11})\.(\d{1,3})")
_SETTING = re.compile(r"[A-Za-z][A-Za-z0-9_-]*=.*")
_COMMAND = re.compile(r"[a-z][a-z0-9_-]*")
_START = re.compile(rb"start(?:~([^~\r\n]*))?(?:~(\d+))?")


def _ms(frac: str | None) -> int:
    return int((frac or "0").ljust(3, "0"))


def parse_time(text: str, ctx: ParseContext) -> datetime | str:
    """A CTP01 time in any of its four time-formats, as a UTC instant; or why it is none of them."""
    try:
        if m := _ISO.fullmatch(text):
            y, mo, d, hh, mm, ss, frac = m.groups()
            return local(date(int(y), int(mo), int(d)), time(int(hh), int(mm), int(ss), _ms(frac) * 1000), ctx.tz)
        if m := _NORMAL.fullmatch(text):
            hh, mm, ss, frac = m.groups()
            return complete_time(time(int(hh), int(mm), int(ss), _ms(frac) * 1000), ctx)
        if m := _UNIX.fullmatch(text):
            secs, frac = m.groups()
            return to_utc_ms(datetime.fromtimestamp(int(secs), UTC) + timedelta(milliseconds=_ms(frac)))
        if digits(text) and len(text) <= 11:
            value = int(text)
            if value < MS_PER_DAY:  # msecs since local midnight
                tod = (datetime.min + timedelta(milliseconds=value)).time()
                return complete_time(tod, ctx)
            return to_utc_ms(datetime.fromtimestamp(value, UTC))  # whole unix seconds
    except (ValueError, OverflowError, OSError) as exc:
        return str(exc)
    return "not HH:MM:SS.hh, ISO, unix or msecs time"


class ChronoTrackFormat(LineFormat):
    name: ClassVar[str] = "chronotrack"
    default_port: ClassVar[int | None] = 61611
    gateway_role: ClassVar[Literal["connect", "listen", "either"]] = "listen"
    description: ClassVar[str] = "ChronoTrack CTP01 tag observations; reader connects, gateway greets and starts"

    def parse_line(self, text: str, ctx: ParseContext) -> ParseResult:
        raw = text
        line = text.strip()
        parts = line.split("~")
        head = parts[0]
        if head in TAG_FORMATS:
            return _tag_observation(text, ctx, raw)
        if head == "ack":
            return Skipped("ack", raw)
        if head == "err":
            return Skipped("error", raw)
        if len(parts) == 3 and (digits(parts[2]) or parts[2] == "CTP01"):
            return Skipped("greeting", raw)
        if len(parts) == 1 and _SETTING.fullmatch(line):
            return Skipped("setting", raw)
        if len(parts) == 1 and _COMMAND.fullmatch(line):
            return Skipped("command", raw)
        return Rejected(f"not a CTP01 message at byte 0 (starts {show(line[:12])})", raw)

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        return tag_line(read, ctx, DEFAULT_LOCATION)

    def conversation(self, ctx: ParseContext) -> Conversation:
        return ChronoTrackConversation(self, ctx)

    def reader_conversation(self, ctx: ParseContext) -> ReaderConversation:
        return ChronoTrackReader(self, ctx)


def _tag_observation(text: str, ctx: ParseContext, raw: str) -> ParseResult:
    fields = field_offsets(text.rstrip(), "~")
    if len(fields) != N_FIELDS:
        end = len(text.rstrip().encode())
        return Rejected(f"tag observation ends at byte {end} after {len(fields)} fields, want {N_FIELDS}", raw)
    seq_text, seq_off = fields[F_SEQ]
    if not digits(seq_text) or len(seq_text) > 12:
        return Rejected(f"line number {show(seq_text)} at byte {seq_off}: not a whole number", raw)
    tag, tag_off = fields[F_TAG]
    if tag in ("guntime", "newlocation"):
        return Skipped(tag, raw)
    if not tag or not tag.isprintable():
        return Rejected(f"tag {show(tag)} at byte {tag_off}: empty or not printable", raw)
    time_text, time_off = fields[F_TIME]
    ts = parse_time(time_text, ctx)
    if isinstance(ts, str):
        return Rejected(f"time {show(time_text)} at byte {time_off}: {ts}", raw)
    ant_text, ant_off = fields[F_ANTENNA]
    if not digits(ant_text) or len(ant_text) > 3:
        return Rejected(f"antenna port {show(ant_text)} at byte {ant_off}: not a number", raw)
    return Read(
        chip=tag,
        bib=None,
        timestamp=ts,
        antenna=int(ant_text) or None,  # 0: no antenna (gun times use it)
        rssi=None,
        reader=fields[F_READER][0] or ctx.reader,
        seq=int(seq_text),
        raw=raw,
    )


def tag_line(read: Read, ctx: ParseContext, location: str) -> bytes:
    """A CT01_33 observation with an ISO local time in hundredths (the time-format that keeps the date)."""
    for label, value in (("tag", read.chip), ("reader", read.reader)):
        if value and ("~" in value or not value.isprintable()):
            raise ValueError(f"{label} {value!r} cannot be written as a CTP01 field")
    if not read.chip:
        raise ValueError("a CTP01 observation needs a tag")
    wall = read.timestamp.astimezone(ctx.tz)
    when = wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall.microsecond // 10_000:02d}"
    parts = ["CT01_33", str(read.seq or 0), location, read.chip, when, "0", read.reader or "000000"]
    parts.append(str(read.antenna or 0))
    return ("~".join(parts) + "\r\n").encode()


@dataclass(slots=True)
class ChronoTrackConversation(Conversation):
    """Gateway side: greet, start the stream once the reader has introduced itself, answer pings."""

    fmt: ChronoTrackFormat
    ctx: ParseContext
    silence_timeout: float | None = 30.0  # keepalive() pings; a live reader answers ack~ping
    reader_name: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    location: str | None = None  # last location seen in an observation, for resuming
    last_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)
    _settings_due: int = 0
    started: bool = False

    def greeting(self) -> bytes:
        return f"rufus-gateway~{__version__}~CTP01\r\n".encode()

    def on_record(self, record: Record) -> tuple[list[ParseResult], bytes]:
        result = parse_record(self.fmt, record, self.ctx)
        answer = b""
        if isinstance(result, Skipped):
            line = result.raw.strip()
            if result.kind == "greeting" and not line.endswith("~CTP01"):
                name, _version, count = line.split("~")
                self.reader_name, self._settings_due = name, int(count)
                answer = self._maybe_start()
            elif result.kind == "setting":
                key, _, value = line.partition("=")
                self.settings[key] = value
                self._settings_due = max(0, self._settings_due - 1)
                answer = self._maybe_start()
            elif result.kind == "command" and line == "ping":
                answer = b"ack~ping\r\n"
        elif isinstance(result, Read) and result.seq is not None:
            self.location = result.raw.split("~")[F_LOCATION] or self.location
            if self.last_seq is not None and result.seq > self.last_seq + 1:
                self.gaps.append((self.last_seq + 1, result.seq - self.last_seq - 1))
            if self.last_seq is None or result.seq > self.last_seq:
                self.last_seq = result.seq
        return [result], answer

    def _maybe_start(self) -> bytes:
        if self.started or self._settings_due:
            return b""
        self.started = True
        return b"start\r\n"

    def refetch(self, first_seq: int, count: int) -> bytes:
        if self.location is None:
            return b""
        # CTP01 resumes a location's stream from a line number; what follows again is deduplicated on (reader, seq)
        return f"start~{self.location}~{first_seq}\r\n".encode()

    def keepalive(self) -> bytes:
        return b"ping\r\n"


@dataclass(slots=True)
class ChronoTrackReader(ReaderConversation):
    """A ChronoTrack controller: introduces itself, numbers observations, answers ping and resumes on start."""

    fmt: ChronoTrackFormat
    ctx: ParseContext
    location: str = DEFAULT_LOCATION
    history: dict[int, Read] = field(default_factory=dict)
    next_seq: int = 1
    resumes: list[int] = field(default_factory=list)
    started: bool = False  # the gateway said `start` on this connection: observations may stream
    _buf: bytearray = field(default_factory=bytearray)
    _resent: list[Read] = field(default_factory=list)

    def take_resent(self) -> list[Read]:
        out, self._resent = self._resent, []
        return out

    @property
    def ready(self) -> bool:
        return self.started

    def connection_started(self) -> None:
        self.started = False
        self._buf.clear()

    def greeting(self) -> bytes:
        return b"ChronoTrackController~1.0~2\r\nstream-mode=push\r\ntime-format=iso\r\n"

    def encode(self, read: Read) -> bytes:
        numbered = dataclasses.replace(read, seq=self.next_seq, raw="")
        self.history[self.next_seq] = numbered
        self.next_seq += 1
        return tag_line(numbered, self.ctx, self.location)

    def on_bytes(self, data: bytes) -> tuple[list[Read], bytes]:
        self._buf += data
        out = bytearray()
        while (end := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:end]).strip()
            del self._buf[: end + 1]
            if line == b"ping":
                out += b"ack~ping\r\n"
            elif m := _START.fullmatch(line):
                self.started = True
                if m.group(2):  # start~<location>~<line no>: resume from there (a re-fetch)
                    first = int(m.group(2))
                    self.resumes.append(first)
                    for n in sorted(k for k in self.history if k >= first):
                        self._resent.append(self.history[n])
                        out += tag_line(self.history[n], self.ctx, self.location)
        if len(self._buf) > 4096:
            self._buf.clear()
        return [], bytes(out)


FORMAT = ChronoTrackFormat()
