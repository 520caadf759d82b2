"""`ultra`: RFID Timing Systems Ultra / Joey TCP stream (port 23, the gateway connects).

One chip read per line, `,`-separated, LF or CR:
`0,ChipCode,Seconds,Milliseconds,AntennaNo,RSSI,IsRewind,ReaderNo,UltraID,ReaderTime,StartTime,LogID`.
Seconds count from 1980-01-01 on the reader's own wall clock, so they are local time in the reader's
zone. ChipCode is decimal or hex depending on the reader's setting and is kept as sent. Older firmware
stops after UltraID (no log id). The reader says `Connected,<LastTimeSent>` on connect and `V=<volts>`
every 10 s. Missing log ids are asked for again with the rewind-by-record command `600<from>\\r<to>\\r`;
rewound reads come back with IsRewind=1 and their original log id.

Follows the public reading of the protocol in Chronokeep's Ultra interface (github.com/grecaun/chronokeep-windows,
`ChronoKeep/Timing/Interfaces/RFIDUltraInterface.cs`: the same twelve chip-read fields, `V=` and `Connected,`
lines, LF-terminated messages), itself from RFID Timing Systems' Ultra TCP documentation.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import ClassVar, Literal

from gateway.formats._common import LineFormat, digits, field_offsets, show
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

EPOCH = datetime(1980, 1, 1)  # naive: the reader counts on its local wall clock
F_TYPE, F_CHIP, F_SECS, F_MS, F_ANT, F_RSSI, F_REWIND, F_READERNO, F_ULTRA, F_LOGID = 0, 1, 2, 3, 4, 5, 6, 7, 8, 11
MIN_FIELDS, FULL_FIELDS = 9, 12
_CHIP = re.compile(r"[0-9A-Za-z]{1,32}")
_INT = re.compile(r"-?\d{1,6}")
_REWIND_CMD = re.compile(rb"600(\d+)[\r\n]+(\d+)[\r\n]")
_SETTIME_CMD = re.compile(rb"t (\d{2}):(\d{2}):(\d{2}) (\d{2})-(\d{2})-(\d{4})[\r\n]")


def settime_command(now: datetime, tz: tzinfo) -> bytes:
    """`t HH:MM:SS DD-MM-YYYY` + LF: the Ultra's set-time command, its clock being local wall time.

    The layout is the one RFID Timing Systems documents for the Ultra's TCP commands (`t`, a space, then the
    time and date), as implemented by the public Chronokeep timing software (RFIDUltraInterface.SetTime);
    commands end with a line feed. Whole seconds, rounded to the nearest.
    """
    wall = (now + timedelta(microseconds=500_000)).astimezone(tz)
    return f"t {wall:%H:%M:%S %d-%m-%Y}\n".encode()


def is_rewind(raw: str) -> bool:
    """True for a read the reader re-sent from its log (a rewind), not a live one."""
    parts = raw.split(",")
    return len(parts) > F_REWIND and parts[F_REWIND].strip() == "1"


class UltraFormat(LineFormat):
    name: ClassVar[str] = "ultra"
    default_port: ClassVar[int | None] = 23
    gateway_role: ClassVar[Literal["connect", "listen", "either"]] = "connect"
    description: ClassVar[str] = "RFID Timing Systems Ultra/Joey chip reads, V= heartbeat, rewind by log id"

    def parse_line(self, text: str, ctx: ParseContext) -> ParseResult:
        raw = text
        line = text.strip()
        if line.startswith("V="):
            return Skipped("heartbeat", raw)
        if line.startswith("Connected"):
            return Skipped("greeting", raw)
        fields = field_offsets(text, ",")
        kind, kind_off = fields[F_TYPE]
        if kind.strip() != "0":
            return Rejected(f"record type {show(kind)} at byte {kind_off}: not a chip read (0)", raw)
        if len(fields) not in (MIN_FIELDS, MIN_FIELDS + 1, MIN_FIELDS + 2, FULL_FIELDS):
            end = len(text.encode())
            return Rejected(
                f"chip read ends at byte {end} after {len(fields)} fields, want {MIN_FIELDS} to {FULL_FIELDS}", raw
            )
        chip, chip_off = fields[F_CHIP]
        if not _CHIP.fullmatch(chip):
            return Rejected(f"ChipCode {show(chip)} at byte {chip_off}: not a decimal or hex chip code", raw)
        secs, secs_off = fields[F_SECS]
        if not digits(secs) or len(secs) > 11:
            return Rejected(f"Seconds {show(secs)} at byte {secs_off}: not seconds since 1980", raw)
        ms, ms_off = fields[F_MS]
        if not digits(ms) or int(ms) > 999:
            return Rejected(f"Milliseconds {show(ms)} at byte {ms_off}: not 0-999", raw)
        try:
            wall = EPOCH + timedelta(seconds=int(secs), milliseconds=int(ms))
            ts = to_utc_ms(wall.replace(tzinfo=ctx.tz))
        except (OverflowError, ValueError):
            return Rejected(f"Seconds {show(secs)} at byte {secs_off}: out of range", raw)
        ant, ant_off = fields[F_ANT]
        if not digits(ant) or len(ant) > 3:
            return Rejected(f"AntennaNo {show(ant)} at byte {ant_off}: not an antenna number", raw)
        rssi_text, rssi_off = fields[F_RSSI]
        rssi: float | None = None
        if rssi_text:
            if not _INT.fullmatch(rssi_text):
                return Rejected(f"RSSI {show(rssi_text)} at byte {rssi_off}: not a whole number", raw)
            rssi = float(int(rssi_text))
        rewind, rewind_off = fields[F_REWIND]
        if rewind not in ("0", "1"):
            return Rejected(f"IsRewind {show(rewind)} at byte {rewind_off}: not 0 or 1", raw)
        seq: int | None = None
        if len(fields) == FULL_FIELDS:
            log_id, log_off = fields[F_LOGID]
            if not digits(log_id) or len(log_id) > 12:
                return Rejected(f"LogID {show(log_id)} at byte {log_off}: not a log position", raw)
            seq = int(log_id)
        return Read(
            chip=chip,
            bib=None,
            timestamp=ts,
            antenna=int(ant) or None,  # 0: no antenna reported
            rssi=rssi,
            reader=fields[F_ULTRA][0] or ctx.reader,
            seq=seq,
            raw=raw,
        )

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        return line(read, ctx, rewind=False)

    def conversation(self, ctx: ParseContext) -> Conversation:
        return UltraConversation(self, ctx)

    def reader_conversation(self, ctx: ParseContext) -> ReaderConversation:
        return UltraReader(self, ctx)


def line(read: Read, ctx: ParseContext, *, rewind: bool) -> bytes:
    """A chip read as the Ultra sends it (LF-terminated); without a seq, the older 9-field form."""
    if not read.chip or not _CHIP.fullmatch(read.chip):
        raise ValueError(f"chip {read.chip!r} is not an Ultra chip code")
    wall = read.timestamp.astimezone(ctx.tz).replace(tzinfo=None)
    delta = wall - EPOCH
    secs = delta.days * 86400 + delta.seconds
    ultra_id = read.reader if read.reader and digits(read.reader) else "1"
    parts = [
        "0",
        read.chip,
        str(secs),
        str(delta.microseconds // 1000),
        str(read.antenna or 0),
        "" if read.rssi is None else str(int(read.rssi)),
        "1" if rewind else "0",
        "1",  # ReaderNo: the Ultra's internal reader board
        ultra_id,
    ]
    if read.seq is not None:
        parts += ["0", "0", str(read.seq)]  # ReaderTime, StartTime (MTB downhill only), LogID
    return (",".join(parts) + "\n").encode()


@dataclass(slots=True)
class UltraConversation(Conversation):
    """Gateway side: the Ultra just streams; note gaps in live log ids, ask for them with a rewind."""

    fmt: UltraFormat
    ctx: ParseContext
    silence_timeout: float | None = 30.0  # three missed `V=` heartbeats
    last_seq: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)
    rewound: int = 0  # rewound reads received (IsRewind=1)

    def on_record(self, record: Record) -> tuple[list[ParseResult], bytes]:
        result = parse_record(self.fmt, record, self.ctx)
        if isinstance(result, Read) and result.seq is not None:
            if is_rewind(result.raw):
                self.rewound += 1
            else:
                if self.last_seq is not None and result.seq > self.last_seq + 1:
                    self.gaps.append((self.last_seq + 1, result.seq - self.last_seq - 1))
                if self.last_seq is None or result.seq > self.last_seq:
                    self.last_seq = result.seq
        return [result], b""

    def refetch(self, first_seq: int, count: int) -> bytes:
        return f"600{first_seq}\r{first_seq + count - 1}\r".encode()

    def is_resend(self, read: Read) -> bool:
        return is_rewind(read.raw)

    def set_time(self, now: datetime) -> bytes:
        return settime_command(now, self.ctx.tz)


@dataclass(slots=True)
class UltraReader(ReaderConversation):
    """An Ultra: numbers reads by log position, sends `V=` heartbeats, answers rewinds by record."""

    fmt: UltraFormat
    ctx: ParseContext
    log: dict[int, Read] = field(default_factory=dict)
    next_seq: int = 1
    rewinds: list[tuple[int, int]] = field(default_factory=list)
    clock_set: list[datetime] = field(default_factory=list)  # each `t` (set time) received, as an aware instant
    _buf: bytearray = field(default_factory=bytearray)
    _resent: list[Read] = field(default_factory=list)

    def take_resent(self) -> list[Read]:
        out, self._resent = self._resent, []
        return out

    def greeting(self) -> bytes:
        last = max(self.log.values(), key=lambda r: r.timestamp, default=None)
        secs = 0
        if last is not None:
            delta = last.timestamp.astimezone(self.ctx.tz).replace(tzinfo=None) - EPOCH
            secs = delta.days * 86400 + delta.seconds
        return f"Connected,{secs}\n".encode()

    def encode(self, read: Read) -> bytes:
        logged = dataclasses.replace(read, seq=self.next_seq, raw="")
        self.log[self.next_seq] = logged
        self.next_seq += 1
        return line(logged, self.ctx, rewind=False)

    def heartbeat(self) -> bytes:
        return b"V=25.0000\n"

    def on_bytes(self, data: bytes) -> tuple[list[Read], bytes]:
        self._buf += data
        out = bytearray()
        while True:
            found = [m for m in (_SETTIME_CMD.search(self._buf), _REWIND_CMD.search(self._buf)) if m]
            if not found:
                break
            m = min(found, key=lambda x: x.start())  # commands in the order the gateway sent them
            numbers = [int(g) for g in m.groups()]  # before the buffer the match points into changes
            del self._buf[: m.end()]
            if m.re is _SETTIME_CMD:
                hh, mm, ss, dd, mo, yyyy = numbers
                try:
                    self.clock_set.append(datetime(yyyy, mo, dd, hh, mm, ss, tzinfo=self.ctx.tz))
                except ValueError:
                    pass
                continue
            first, last = numbers
            self.rewinds.append((first, last))
            for n in range(first, last + 1):
                if n in self.log:
                    self._resent.append(self.log[n])
                    out += line(self.log[n], self.ctx, rewind=True)
        if len(self._buf) > 256:  # other commands (R, S, t, ?) are not simulated; keep only a possible partial
            del self._buf[:-64]
        return [], bytes(out)


FORMAT = UltraFormat()
