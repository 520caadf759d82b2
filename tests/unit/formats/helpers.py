"""Shared helpers for the format tests: golden files, contexts, running bytes through framer + parser."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.formats.base import Format, ParseContext, ParseResult, Rejected, Skipped
from gateway.model import Read, format_ts, parse_ts

DATA = Path(__file__).resolve().parents[2] / "data" / "formats"


def make_ctx(spec: dict[str, Any]) -> ParseContext:
    return ParseContext(
        tz=ZoneInfo(spec.get("tz", "UTC")),
        date=date.fromisoformat(spec["date"]) if spec.get("date") else None,
        now=parse_ts(spec["now"].replace("Z", ".000Z") if "." not in spec["now"] else spec["now"])
        if spec.get("now")
        else None,
        reader=spec.get("reader"),
    )


def run(fmt: Format, stream: bytes, ctx: ParseContext, chunk: int | None = None) -> list[ParseResult]:
    framer = fmt.framer()
    records = []
    if chunk is None:
        records += framer.feed(stream)
    else:
        for i in range(0, len(stream), chunk):
            records += framer.feed(stream[i : i + chunk])
    records += framer.flush()
    # through the gateway's conversation, as a link would: some records carry several reads (MYLAPS)
    conv = fmt.conversation(ctx)
    results: list[ParseResult] = []
    for record in records:
        results += conv.on_record(record)[0]
    return results


def read_dict(read: Read) -> dict[str, Any]:
    return {
        "bib": read.bib,
        "chip": read.chip,
        "timestamp": format_ts(read.timestamp),
        "antenna": read.antenna,
        "rssi": read.rssi,
        "reader": read.reader,
        "seq": read.seq,
        "raw": read.raw,
        "seen": read.seen,
        "counters": list(read.counters) if read.counters is not None else None,
    }


def describe(result: ParseResult) -> dict[str, Any]:
    if isinstance(result, Read):
        return {"read": read_dict(result)}
    if isinstance(result, Rejected):
        return {"rejected": result.reason}
    assert isinstance(result, Skipped)
    return {"skipped": result.kind}


def matches(expected: dict[str, Any], got: ParseResult) -> bool:
    actual = describe(got)
    if "read" in expected:
        if "read" not in actual:
            return False
        return all(actual["read"][k] == v for k, v in expected["read"].items())
    if "rejected" in expected:
        return "rejected" in actual and expected["rejected"] in actual["rejected"]
    return actual == expected


def golden_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for path in sorted(DATA.glob("*.json")):
        doc = json.loads(path.read_text())
        for case in doc["cases"]:
            out.append((doc["format"], {**doc.get("ctx", {}), **case.get("ctx", {})}, case))
    return out


def case_bytes(case: dict[str, Any]) -> bytes:
    if "stream_hex" in case:
        return bytes.fromhex(case["stream_hex"])
    data: bytes = case["stream"].encode("utf-8")
    return data


class GatewayEnd:
    """The gateway side of an in-memory connection: a framer feeding a conversation, answers collected."""

    def __init__(self, fmt: Format, ctx: ParseContext) -> None:
        self.framer = fmt.framer()
        self.conv = fmt.conversation(ctx)
        self.results: list[ParseResult] = []

    def receive(self, data: bytes) -> bytes:
        """Bytes from the reader, delivered one at a time (worst-case chunking); returns the answers."""
        answer = b""
        for i in range(len(data)):
            for record in self.framer.feed(data[i : i + 1]):
                results, reply = self.conv.on_record(record)
                self.results += results
                answer += reply
        return answer

    @property
    def reads(self) -> list[Read]:
        return [r for r in self.results if isinstance(r, Read)]
