"""`ipico`: IPICO Elite/Lite tag stream (port 10000, the gateway connects).

Follows the public descriptions of the reader's ASCII tag report: iwismer/rusty-timer
`docs/ipico-protocol/ipico-control-protocol.md` (which quotes the vendor's 2007 "IPICO Reader Serial
Protocol" and decodes packet captures of an Elite reader), its parser `crates/ipico-core/src/read.rs`, and
the reader's own download in `docs/ipico-protocol/captures/testreads` (commit 3650628); the 42-character
TTO frames of `captures/fsls-event-tto.pcapng` as that document quotes them at commit 3cffddc ("TTO-enabled
`aa` frame layout is now observed") and its `scripts/tests/test_parse_pcap.py` decodes them. The golden
lines in tests/data/formats/ipico.json are taken from those captures.

One read per line (CRLF, LF or CR), four lengths:

    aa RR TTTTTTTTTTTT II QQ YYMMDD HHMMSS cc KK                  36: raw
    aa RR TTTTTTTTTTTT II QQ YYMMDD HHMMSS cc KK FS|LS            38: with a first/last-seen suffix
    aa RR TTTTTTTTTTTT II QQ YYMMDD HHMMSS cc XX PP FF KK         42: with the TTO bytes (tag format bit 7)
    aa RR TTTTTTTTTTTT II QQ YYMMDD HHMMSS cc XX PP FF KK FS|LS   44
    0  2  4            16 18 20     26     32 34 36 38 40

`RR` reader id (hex), `T` tag id (12 hex, the tag's CRC omitted). `II`/`QQ` are the I- and Q-channel
decode counters (the vendor spec; real reads carry `0001`, `000e`, `00ff`): NOT signal strength, so they
are kept as `Read.counters` and `rssi` stays None. Date and time are decimal on the reader's local clock,
`cc` is hundredths in hex (00-63). A date of 000000 means the reader has no date, and the day is completed
from the gateway's. `KK` is the checksum: the sum of the ASCII bytes after `aa` up to the checksum (chars
2..33, or 2..39 with TTO bytes) modulo 256, two lowercase hex digits. The TTO bytes are an index `XX`, a
page `PP` and the flags `FF`: bit 7 first-seen, bit 6 last-seen, bit 0 tamper, and `ff` means tamper only.
A real reader in first/last-seen mode sends `80` for the first report and `60` for the delayed one (bit 5
is not in the spec and is ignored); in event mode, `00`. The TTO bytes are on when the `0x11` report format's
first parameter is `ff` (`7f`: off, 36 characters). The `FS`/`LS` suffix is what other parsers accept; no
published capture shows it, and the spec carries first/last-seen in the flags byte.
Either way the read keeps it as `Read.seen` ("first", "last", or "both" for a tag seen once), and a
reader's `ipico_seen` setting may keep only one of them for the duplicate window. Lines starting `ab` are
the reader's answers and status, not reads.
"""

from __future__ import annotations

import re
from datetime import date, time
from typing import ClassVar, Literal

from gateway.formats._common import LineFormat, complete_time, digits, local, show
from gateway.formats.base import ParseContext, ParseResult, Rejected, Skipped
from gateway.model import Read

LENGTH, SUFFIXED, TTO, TTO_SUFFIXED = 36, 38, 42, 44
LENGTHS = (LENGTH, SUFFIXED, TTO, TTO_SUFFIXED)
FIRST_SEEN, LAST_SEEN, TAMPER_ONLY = 0x80, 0x40, 0xFF
_HEX = re.compile(r"[0-9A-Fa-f]+")
_SUFFIX_SEEN = {"FS": "first", "LS": "last"}


def checksum(body: str, end: int = 34) -> str:
    """The two hex digits an IPICO reader appends: sum of the ASCII bytes 2..end-1, modulo 256
    (end 34 for a plain read, 40 for one with TTO bytes)."""
    return f"{sum(body[2:end].encode('ascii', errors='replace')) % 256:02x}"


def _hex(text: str) -> bool:
    return bool(_HEX.fullmatch(text))


def seen_of(flags: int) -> str | None:
    """First/last-seen from a TTO flags byte (bit 7, bit 6); `ff` is the tamper marker alone."""
    if flags == TAMPER_ONLY:
        return None
    first, last = bool(flags & FIRST_SEEN), bool(flags & LAST_SEEN)
    return "both" if first and last else "first" if first else "last" if last else None


def _merge_seen(a: str | None, b: str | None) -> str | None:
    if a is None or a == b:
        return b
    if b is None:
        return a
    return "both"


class IpicoFormat(LineFormat):
    name: ClassVar[str] = "ipico"
    default_port: ClassVar[int | None] = 10000
    gateway_role: ClassVar[Literal["connect", "listen", "either"]] = "connect"
    description: ClassVar[str] = "IPICO Elite/Lite 'aa' tag reads (36/38, and 42/44 with TTO bytes) with checksum"

    def parse_line(self, text: str, ctx: ParseContext) -> ParseResult:
        raw = text
        line = text.strip()
        if line.startswith("ab"):
            return Skipped("status", raw)
        if len(line) not in LENGTHS or not line.isascii() or not line.isprintable():
            if line.startswith("aa"):
                want = ", ".join(str(n) for n in LENGTHS)
                return Rejected(f"tag read ends at byte {len(line)}: {len(line)} characters, want one of {want}", raw)
            return Rejected(f"not a tag read at byte 0 ({len(line)} characters starting {show(line[:8])})", raw)
        if not line.startswith("aa"):
            return Rejected(f"prefix {show(line[:2])} at byte 0: not 'aa'", raw)
        core = TTO if len(line) >= TTO else LENGTH
        at = core - 2
        given, want = line[at:core], checksum(line, at)
        if given.lower() != want:
            return Rejected(f"checksum {show(given)} at byte {at}: computed {show(want)}", raw)
        seen: str | None = None
        if len(line) > core:
            suffix = line[core:]
            if suffix not in _SUFFIX_SEEN:
                return Rejected(f"suffix {show(suffix)} at byte {core}: not FS or LS", raw)
            seen = _SUFFIX_SEEN[suffix]
        fields = [("reader id", 2, 4), ("tag id", 4, 16), ("I counter", 16, 18), ("Q counter", 18, 20)]
        if core == TTO:
            fields += [("TTO index", 34, 36), ("TTO page", 36, 38), ("TTO flags", 38, 40)]
        for label, start, end in fields:
            if not _hex(line[start:end]):
                return Rejected(f"{label} {show(line[start:end])} at byte {start}: not hex", raw)
        if core == TTO:
            seen = _merge_seen(seen_of(int(line[38:40], 16)), seen)
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
        return Read(
            chip=line[4:16],
            bib=None,
            timestamp=ts,
            reader=line[2:4],
            raw=raw,
            seen=seen,
            counters=(int(line[16:18], 16), int(line[18:20], 16)),
        )

    def format(self, read: Read, ctx: ParseContext) -> bytes:
        """A raw 36-character read (the simulator's). Counters: the read's own, else what a reader shows for a
        tag decoded a few times on one channel, more often the nearer the tag passed (from the RSSI)."""
        tag = (read.chip or "").rjust(12, "0")
        if len(tag) != 12 or not _hex(tag):
            raise ValueError(f"chip {read.chip!r} is not an IPICO tag id (12 hex digits)")
        reader = read.reader if read.reader and len(read.reader) == 2 and _hex(read.reader) else "00"
        chan_i, chan_q = read.counters if read.counters is not None else (0, decode_count(read.rssi))
        wall = read.timestamp.astimezone(ctx.tz)
        if not 2000 <= wall.year <= 2099:
            raise ValueError(f"year {wall.year} does not fit IPICO's two-digit year")
        body = (
            f"aa{reader}{tag}{chan_i & 0xFF:02x}{chan_q & 0xFF:02x}{wall:%y%m%d%H%M%S}{wall.microsecond // 10_000:02x}"
        )
        return (body + checksum(body) + "\r\n").encode()


def decode_count(rssi: float | None) -> int:
    """A plausible Q-channel decode count for a read of this RSSI, as in the reader's published download
    (testreads: mostly 1, up to 4 for a tag that passed close): 1 at -60 dBm or weaker, 4 at -30 dBm or
    stronger; no RSSI: 1."""
    if rssi is None:
        return 1
    dbm = rssi if rssi < 0 else rssi - 255
    return 1 + max(0, min(3, round((dbm + 60) / 10)))


FORMAT = IpicoFormat()
