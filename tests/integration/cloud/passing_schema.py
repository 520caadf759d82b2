"""The `passings_list` item schema, transcribed from shared/rufus-api.md ("A passing in passings_list
(strict: no other keys)"), deliberately independent of gateway/ code: it checks what the client sent."""

from __future__ import annotations

import re
from typing import Any

# | field | type | required |  -- from the contract page's table
REQUIRED = {"timestamp", "num_passing", "bib"}
OPTIONAL_STRINGS = {"chip", "participant_id", "status", "timezone", "gender"}
OPTIONAL_NUMBERS = {"latitude", "longitude"}
ALLOWED = REQUIRED | OPTIONAL_STRINGS | OPTIONAL_NUMBERS
# "UTC, YYYY-MM-DDTHH:mm:ss.sssZ (always milliseconds, always Z)"
TIMESTAMP = re.compile(
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z$"
)
# "deviceid and token_session: 64 uppercase hex characters"
HEX64 = re.compile(r"^[0-9A-F]{64}$")


def passing_problems(item: Any) -> list[str]:
    if not isinstance(item, dict):
        return [f"not an object: {item!r}"]
    problems = [f"unknown key {k!r}" for k in item if k not in ALLOWED]
    problems += [f"missing {k!r}" for k in REQUIRED if k not in item or item[k] is None]
    ts = item.get("timestamp")
    if ts is not None and not (isinstance(ts, str) and TIMESTAMP.match(ts)):
        problems.append(f"timestamp {ts!r} is not YYYY-MM-DDTHH:mm:ss.sssZ")
    num = item.get("num_passing")
    if num is not None and (type(num) is not int or num < 0):
        problems.append(f"num_passing {num!r} is not an integer >= 0")
    bib = item.get("bib")
    if bib is not None and not isinstance(bib, str):
        problems.append(f"bib {bib!r} is not a string")
    for key in OPTIONAL_STRINGS:
        if item.get(key) is not None and not isinstance(item[key], str):
            problems.append(f"{key} {item[key]!r} is not a string or null")
    for key in OPTIONAL_NUMBERS:
        value = item.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"{key} {value!r} is not a number or null")
    return problems


def request_problems(body: Any) -> list[str]:
    """Problems with one POST /passings body: top-level keys, token shape, then every item."""
    if not isinstance(body, dict):
        return [f"body is not an object: {body!r}"]
    problems = [f"unknown top-level key {k!r}" for k in body if k not in ("token_session", "passings_list")]
    token = body.get("token_session")
    if not (isinstance(token, str) and HEX64.match(token)):
        problems.append(f"token_session {token!r} is not 64 uppercase hex")
    items = body.get("passings_list")
    if not isinstance(items, list) or not items:
        return [*problems, "passings_list is not a non-empty list"]
    for i, item in enumerate(items):
        problems += [f"passings_list[{i}]: {p}" for p in passing_problems(item)]
    return problems
