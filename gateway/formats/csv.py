"""`csv`: the gateway's own line format, `bib,chip,timestamp[,antenna[,rssi]]`.

One read per line, LF or CRLF (a lone CR ends a line too, so a terminal's output parses). `#` starts a
comment line; a `bib,chip,...` header line is skipped. Bib or chip may be empty, not both. The timestamp is
ISO 8601 with an optional fraction and `Z` or an offset; without one it is the reader's local time
(ctx.tz). A bare time of day (`09:15:02.250`) is completed with the day, as for readers without GPS.
format() always writes UTC with milliseconds and `Z`, so what the simulator sends is unambiguous.

No vendor protocol: this is the gateway's own, documented here and in README (for timers that export CSV, the
replay of a spreadsheet, and the tests). A field a spreadsheet quoted whole is unquoted; a comma inside
quotes is not supported (no bib or chip holds one).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, timezone
from typing import ClassVar, Literal

from gateway.formats._common import LineFormat, complete_time, field_offsets, number, show
from gateway.formats.base import ParseContext, ParseResult, ReaderConversation, Rejected, Skipped
from gateway.model import Read, format_ts, to_utc_ms

_TS = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?(Z|z|[+-]\d{2}(?::?\d{2})?)?")
_TOD = re.compile(r"(\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?")
_ANTENNA = re.compile(r"\d{1,4}")
# The line as the simulator and most exports write it (UTC `Z` time, plain bib and chip, optional antenna and
# rssi): parsed in one match, the same Read the general path below builds, which takes everything else (and
# every line to reject, so its messages stay in one place). py-spy showed the general path's per-field
# offsets, unquoting and checks as a third of the daemon's ingest time.
_FAST = re.compile(
    r"([0-9A-Za-z_.:-]*),([0-9A-Za-z_.:-]*),(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?Z"
    r"(?:,(\d{1,4})?(?:,(-?\d{1,6}(?:\.\d{1,6})?)?)?)?"
)


def _micro(frac: str | None) -> int:
    return int((frac or "").ljust(6, "0")[:6])


def parse_timestamp(text: str, ctx: ParseContext) -> datetime | str:
    """The instant `text` names, or the reason it does not name one."""
    m = _TS.fullmatch(text)
    if m:
        year, month, day, hh, mm, ss, frac, zone = m.groups()
        try:
            tz = ctx.tz
            if zone in ("Z", "z"):
                tz = UTC
            elif zone:
                sign = -1 if zone[0] == "-" else 1
                digits = zone[1:].replace(":", "")
                offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
                if offset >= timedelta(hours=24):
                    return f"offset {zone} out of range"
                tz = timezone(sign * offset)
            ts = datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss), _micro(frac), tzinfo=tz)
            # in UTC the instant may fall outside datetime's years 1..9999 (9999-12-31T23:00-05:00)
            return to_utc_ms(ts)
        except (ValueError, OverflowError) as exc:
            return str(exc)
    m = _TOD.fullmatch(text)
    if m:
        hh, mm, ss, frac = m.groups()
        try:
            tod = time(int(hh), int(mm), int(ss), _micro(frac))
        except ValueError as exc:
            return str(exc)
        return complete_time(tod, ctx)
    return "not an ISO 8601 date-time (YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM]) or time of day"


def _unquote(value: str, offset: int) -> tuple[str, int]:
    """A spreadsheet export may quote every field ("17","E2000017",...): drop the quotes, not the meaning."""
    inner = value.strip()
    if len(inner) >= 2 and inner[0] == inner[-1] == '"':
        return inner[1:-1], offset + len(value[: value.index('"') + 1].encode())
    return value, offset


def _ident(value: str) -> str | None:
    """Bib/chip: None when empty; control characters are refused by the caller."""
    return value or None


class CsvFormat(LineFormat):
    name: ClassVar[str] = "csv"
    default_port: ClassVar[int | None] = None
    gateway_role: ClassVar[Literal["connect", "listen", "either"]] = "either"
    description: ClassVar[str] = "the gateway's own line format: bib,chip,timestamp[,antenna[,rssi]]"

    def parse_line(self, text: str, ctx: ParseContext) -> ParseResult:
        m = _FAST.fullmatch(text)
        if m:
            bib, chip, year, month, day, hh, mm, ss, frac, antenna, rssi = m.groups()
            if bib or chip:
                micro = int(frac[:6].ljust(6, "0")) if frac else 0
                try:
                    ts = datetime(
                        int(year), int(month), int(day), int(hh), int(mm), int(ss), micro - micro % 1000, tzinfo=UTC
                    )
                except ValueError:
                    pass  # the general path names what is wrong
                else:
                    return Read(
                        chip=chip or None,
                        bib=bib or None,
                        timestamp=ts,
                        antenna=int(antenna) if antenna else None,
                        rssi=float(rssi) if rssi else None,
                        reader=ctx.reader,
                        raw=text,
                    )
        return self._parse_general(text, ctx)

    def _parse_general(self, text: str, ctx: ParseContext) -> ParseResult:
        raw = text
        if text.startswith("\ufeff"):  # the byte-order mark a spreadsheet puts at the top of a CSV export
            text = "   " + text[1:]  # three spaces for its three bytes: offsets stay byte offsets
        stripped = text.strip()
        if not stripped:
            return Skipped("blank", raw)
        if stripped.startswith("#"):
            return Skipped("comment", raw)
        fields = [_unquote(value, offset) for value, offset in field_offsets(text, ",")]
        if len(fields) >= 2 and fields[0][0].strip().lower() == "bib" and fields[1][0].strip().lower() == "chip":
            return Skipped("header", raw)
        if len(fields) < 3:
            end = len(raw.encode())
            missing = "chip" if len(fields) < 2 else "timestamp"
            return Rejected(f"{missing}: missing at byte {end} (want bib,chip,timestamp[,antenna[,rssi]])", raw)
        if len(fields) > 5:
            return Rejected(
                f"extra field at byte {fields[5][1]}: at most 5 fields (bib,chip,timestamp,antenna,rssi)", raw
            )
        for (value, offset), label in zip(fields[:2], ("bib", "chip"), strict=True):
            if value.isprintable():
                continue
            for i, ch in enumerate(value):
                if not ch.isprintable():
                    at = offset + len(value[:i].encode("utf-8"))
                    return Rejected(f"{label}: control character {ch!r} at byte {at}", raw)
        bib = _ident(fields[0][0].strip())
        chip = _ident(fields[1][0].strip())
        if bib is None and chip is None:
            return Rejected("bib and chip both empty at byte 0 (one of them is needed)", raw)
        ts_text, ts_off = fields[2]
        ts = parse_timestamp(ts_text.strip(), ctx)
        if isinstance(ts, str):
            return Rejected(f"timestamp {show(ts_text)} at byte {ts_off}: {ts}", raw)
        antenna: int | None = None
        rssi: float | None = None
        if len(fields) >= 4 and fields[3][0].strip():
            a_text, a_off = fields[3]
            if not _ANTENNA.fullmatch(a_text.strip()):
                return Rejected(f"antenna {show(a_text)} at byte {a_off}: not a whole number 0-9999", raw)
            antenna = int(a_text)
        if len(fields) == 5 and fields[4][0].strip():
            r_text, r_off = fields[4]
            signal = number(r_text)
            if isinstance(signal, str):
                return Rejected(f"rssi {show(r_text)} at byte {r_off}: {signal}", raw)
            rssi = signal
        return Read(chip=chip, bib=bib, timestamp=ts, antenna=antenna, rssi=rssi, reader=ctx.reader, raw=raw)

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        for label, value in (("bib", read.bib), ("chip", read.chip)):
            if value and ("," in value or not value.isprintable() or value != value.strip()):
                raise ValueError(f"{label} {value!r} cannot be written as a csv field")
        if not read.bib and not read.chip:
            raise ValueError("a csv read needs a bib or a chip")
        parts = [read.bib or "", read.chip or "", format_ts(read.timestamp)]
        if read.antenna is not None or read.rssi is not None:
            parts.append("" if read.antenna is None else str(read.antenna))
        if read.rssi is not None:
            parts.append(repr(float(read.rssi)))
        return (",".join(parts) + "\n").encode("utf-8")

    def reader_conversation(self, ctx: ParseContext) -> ReaderConversation:
        return CsvReader(self, ctx)


class CsvReader(ReaderConversation):
    """The simulated One4All: plain lines, and a `# heartbeat` comment now and then (the gateway skips
    comments), so a gateway configured with `[reader] silence_s` sees a quiet but live reader as alive."""

    HEARTBEAT = b"# heartbeat\n"

    def __init__(self, fmt: CsvFormat, ctx: ParseContext) -> None:
        self.fmt = fmt
        self.ctx = ctx

    def greeting(self) -> bytes:
        return b""

    def encode(self, read: Read) -> bytes:
        return self.fmt.format(read, self.ctx)

    def heartbeat(self) -> bytes:
        return self.HEARTBEAT


FORMAT = CsvFormat()

__all__ = ["FORMAT", "CsvFormat", "CsvReader", "parse_timestamp"]
