"""`ipico`: IPICO Elite/Lite tag stream (port 10000, the gateway connects).

Fixed width, one read per line (CRLF, LF or CR):

    aa RR TTTTTTTTTTTT II QQ YYMMDD HHMMSS cc KK [FS|LS]
    0  2  4            16 18 20     26     32 34  36

`RR` reader id (hex), `T` tag id (12 hex), `II`/`QQ` the two receive channels' signal (hex), date and time
in decimal on the reader's local clock, `cc` hundredths in hex (00-63), `KK` the checksum: the sum of the
ASCII bytes 2..33 modulo 256 as two hex digits. In first-seen/last-seen mode the line ends in `FS` or `LS`;
both are reads. A date of 000000 means the reader has no date, and the day is completed from the gateway's.
Lines starting `ab` are the reader's answers and status, not reads.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import ClassVar, Literal

from gateway.formats._common import DelimFramer, complete_time, decode_line, digits, local, show, signal_byte
from gateway.formats.base import Format, Framer, ParseContext, ParseResult, Rejected, Skipped
from gateway.model import Read

LENGTH, SUFFIXED = 36, 38
_HEX = re.compile(r"[0-9A-Fa-f]+")


def checksum(body: str) -> str:
    """The two hex digits an IPICO reader appends: sum of the ASCII bytes 2..33, modulo 256."""
    return f"{sum(body[2:34].encode('ascii', errors='replace')) % 256:02x}"


def _hex(text: str) -> bool:
    return bool(_HEX.fullmatch(text))


class IpicoFormat(Format):
    name: ClassVar[str] = "ipico"
    default_port: ClassVar[int | None] = 10000
    gateway_role: ClassVar[Literal["connect", "listen", "either"]] = "connect"
    description: ClassVar[str] = "IPICO Elite/Lite fixed-width 'aa' tag reads with checksum, FS/LS lines"

    def framer(self) -> Framer:
        return DelimFramer(b"\r\n")

    def parse(self, record: bytes, ctx: ParseContext) -> ParseResult:
        text, err = decode_line(record)
        if text is None:
            return Rejected(err, record.decode("utf-8", errors="replace"))
        raw = text
        line = text.strip()
        if line.startswith("ab"):
            return Skipped("status", raw)
        if len(line) not in (LENGTH, SUFFIXED) or not line.isascii() or not line.isprintable():
            if line.startswith("aa"):
                return Rejected(
                    f"tag read ends at byte {len(line)}: {len(line)} characters, want {LENGTH} or {SUFFIXED}", raw
                )
            return Rejected(f"not a tag read at byte 0 ({len(line)} characters starting {show(line[:8])})", raw)
        if not line.startswith("aa"):
            return Rejected(f"prefix {show(line[:2])} at byte 0: not 'aa'", raw)
        given, want = line[34:36], checksum(line)
        if given.lower() != want:
            return Rejected(f"checksum {show(given)} at byte 34: computed {show(want)}", raw)
        if len(line) == SUFFIXED and line[36:] not in ("FS", "LS"):
            return Rejected(f"suffix {show(line[36:])} at byte 36: not FS or LS", raw)
        reader, tag, chan_i, chan_q = line[2:4], line[4:16], line[16:18], line[18:20]
        for label, value, offset in (
            ("reader id", reader, 2),
            ("tag id", tag, 4),
            ("I", chan_i, 16),
            ("Q", chan_q, 18),
        ):
            if not _hex(value):
                return Rejected(f"{label} {show(value)} at byte {offset}: not hex", raw)
        day_text, tod_text, cs_text = line[20:26], line[26:32], line[32:34]
        if not _hex(cs_text) or int(cs_text, 16) > 0x63:
            return Rejected(f"hundredths {show(cs_text)} at byte 32: not hex 00-63", raw)
        try:
            if not digits(tod_text):
                raise ValueError("not digits")
            tod = time(int(tod_text[:2]), int(tod_text[2:4]), int(tod_text[4:6]), int(cs_text, 16) * 10_000)
        except ValueError as exc:
            return Rejected(f"time {show(tod_text)} at byte 26: {exc}", raw)
        if day_text == "000000":
            ts = complete_time(tod, ctx)
        else:
            try:
                if not digits(day_text):
                    raise ValueError("not digits")
                day = date(2000 + int(day_text[:2]), int(day_text[2:4]), int(day_text[4:6]))
            except ValueError as exc:
                return Rejected(f"date {show(day_text)} at byte 20: {exc}", raw)
            ts = local(day, tod, ctx.tz)
        rssi = float(max(int(chan_i, 16), int(chan_q, 16)))
        return Read(chip=tag, bib=None, timestamp=ts, antenna=None, rssi=rssi, reader=reader, seq=None, raw=raw)

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        tag = (read.chip or "").rjust(12, "0")
        if len(tag) != 12 or not _hex(tag):
            raise ValueError(f"chip {read.chip!r} is not an IPICO tag id (12 hex digits)")
        reader = read.reader if read.reader and len(read.reader) == 2 and _hex(read.reader) else "00"
        signal = f"{signal_byte(read.rssi):02x}"
        wall = read.timestamp.astimezone(ctx.tz)
        if not 2000 <= wall.year <= 2099:
            raise ValueError(f"year {wall.year} does not fit IPICO's two-digit year")
        body = f"aa{reader}{tag}{signal}{signal}{wall:%y%m%d%H%M%S}{wall.microsecond // 10_000:02x}"
        return (body + checksum(body) + "\r\n").encode()


FORMAT = IpicoFormat()
