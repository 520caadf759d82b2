"""The simulator's ground truth: JSON lines of what it sent and what the gateway acknowledged.

    {"type": "read", "seq": 1, "bib": "12", "chip": "058000000012", "timestamp": "...Z", "antenna": 2,
     "rssi": -47.0, "resend": false, "sent_at": "...Z"}
    {"type": "ack", "seq": 1, "chip": "058000000012", "timestamp": "...Z", "at": "...Z"}
    {"type": "read", ..., "resend": true, "trigger": "refetch"}   sent again because the gateway asked
                                            (RACE RESULT re-fetch, Ultra rewind, ChronoTrack resume)
    {"type": "dropped", "seq": 7, ...}      a read logged by the reader but lost on the wire (--drop-rate)
    {"type": "corrupt", "raw": "\\x00\\x7f...", "sent_at": "...Z"}
    {"type": "summary", "sent": 812, "resent": 3, "acked": 812, ...}

Each line is flushed as written, so a run killed half-way leaves a file `load()` still reads; the summary
line comes last and only when the run ended on its own terms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gateway.capture import escape
from gateway.model import Read, format_ts, parse_ts


def read_key(read: Read) -> tuple[str | None, str]:
    """How a read is recognised across protocols: chip (or bib) and reader time; seq may be renumbered."""
    return (read.chip if read.chip is not None else read.bib, format_ts(read.timestamp))


def _now() -> str:
    return format_ts(datetime.now(UTC))


class TruthWriter:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    @classmethod
    def open(cls, path: str | Path) -> TruthWriter:
        return cls(Path(path).open("w", encoding="utf-8"))

    def _line(self, obj: dict[str, Any]) -> None:
        self._stream.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._stream.flush()

    def sent(self, read: Read, *, resend: bool = False, trigger: str | None = None) -> None:
        """A read on the wire; `trigger` says why a re-send happened when the gateway asked for it."""
        obj: dict[str, Any] = {
            "type": "read",
            "seq": read.seq,
            "bib": read.bib,
            "chip": read.chip,
            "timestamp": format_ts(read.timestamp),
            "antenna": read.antenna,
            "rssi": read.rssi,
            "resend": resend,
            "sent_at": _now(),
        }
        if trigger is not None:
            obj["trigger"] = trigger
        self._line(obj)

    def acked(self, read: Read) -> None:
        self._line(
            {
                "type": "ack",
                "seq": read.seq,
                "bib": read.bib,
                "chip": read.chip,
                "timestamp": format_ts(read.timestamp),
                "at": _now(),
            }
        )

    def dropped(self, read: Read) -> None:
        """A read the reader logged but whose bytes were lost on the wire (the gateway may re-fetch it)."""
        self._line(
            {
                "type": "dropped",
                "seq": read.seq,
                "bib": read.bib,
                "chip": read.chip,
                "timestamp": format_ts(read.timestamp),
                "antenna": read.antenna,
                "rssi": read.rssi,
            }
        )

    def corrupt(self, raw: bytes) -> None:
        self._line({"type": "corrupt", "raw": escape(raw), "sent_at": _now()})

    def summary(self, **figures: Any) -> None:
        self._line({"type": "summary", **figures})

    def close(self) -> None:
        self._stream.close()


@dataclass
class Truth:
    """A truth file folded: the distinct reads sent (first send), which were acked, and the summary."""

    reads: list[Read] = field(default_factory=list)
    acked: set[tuple[str | None, str]] = field(default_factory=set)
    dropped: list[Read] = field(default_factory=list)  # lost on the wire; only a re-fetch brings them
    corrupt: int = 0
    resends: int = 0
    refetched: int = 0  # re-sends the gateway asked for (re-fetch, rewind, resume)
    summary: dict[str, Any] | None = None

    def is_acked(self, read: Read) -> bool:
        return read_key(read) in self.acked


def load(path: str | Path) -> Truth:
    truth = Truth()
    seen: set[tuple[str | None, str]] = set()
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                break  # the last line of a killed run may be cut short
            kind = obj.get("type")
            if kind == "read":
                read = Read(
                    chip=obj["chip"],
                    bib=obj["bib"],
                    timestamp=parse_ts(obj["timestamp"]),
                    antenna=obj["antenna"],
                    rssi=obj["rssi"],
                    seq=obj["seq"],
                )
                if obj.get("resend"):
                    truth.resends += 1
                    if obj.get("trigger") == "refetch":
                        truth.refetched += 1
                if read_key(read) not in seen:
                    seen.add(read_key(read))
                    truth.reads.append(read)
            elif kind == "dropped":
                truth.dropped.append(
                    Read(
                        chip=obj["chip"],
                        bib=obj["bib"],
                        timestamp=parse_ts(obj["timestamp"]),
                        antenna=obj["antenna"],
                        rssi=obj["rssi"],
                        seq=obj["seq"],
                    )
                )
            elif kind == "ack":
                chip = obj.get("chip")
                truth.acked.add((chip if chip is not None else obj.get("bib"), obj["timestamp"]))
            elif kind == "corrupt":
                truth.corrupt += 1
            elif kind == "summary":
                truth.summary = obj
    return truth
