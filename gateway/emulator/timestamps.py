"""Timestamps as the vendor's contract states them (rufus-api.md): UTC, `YYYY-MM-DDTHH:mm:ss.sssZ`, always
milliseconds, always `Z`.

Written from the contract, not from the gateway: the emulator is the gateway's stand-in for the cloud, and a
stand-in that validated with the gateway's own helper (gateway.model) would drift with it and could never
catch the drift. So nothing here imports the gateway's timestamp code, and the check is by position and
range rather than by a regular expression (a `\\d` also matches non-ASCII digits, a `$` a trailing newline).
"""

from __future__ import annotations

from datetime import UTC, datetime

FORM = "YYYY-MM-DDTHH:mm:ss.sssZ"


_SEPARATORS = tuple((i, c) for i, c in enumerate(FORM) if not (c.isalpha() and c not in "TZ"))


def is_contract_ts(value: object) -> bool:
    """The exact form, ASCII digits in every digit place, and a real UTC instant (no month 13, no Feb 30,
    no hour 24, no second 60). (ASCII first: then str.isdigit() means exactly 0-9; it checks each POST's
    every passing, and the per-character loop it replaces was half the emulator's time in a drain.)"""
    if not isinstance(value, str) or len(value) != len(FORM) or not value.isascii():
        return False
    if any(value[i] != c for i, c in _SEPARATORS):
        return False
    year, month, day, hour, minute, second, ms = (
        value[0:4],
        value[5:7],
        value[8:10],
        value[11:13],
        value[14:16],
        value[17:19],
        value[20:23],
    )
    if not (year + month + day + hour + minute + second + ms).isdigit():
        return False
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    except ValueError:
        return False
    return True


def contract_now() -> str:
    """The current instant in the contract's form (the cloud's own `created`-style stamps)."""
    now = datetime.now(UTC)
    return f"{now.year:04d}-{now.month:02d}-{now.day:02d}T{now.hour:02d}:{now.minute:02d}:{now.second:02d}." + (
        f"{now.microsecond // 1000:03d}Z"
    )
