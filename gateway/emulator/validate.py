"""Strict request validation, as the contract page describes the vendor's schema: unknown keys, wrong
types and missing required fields are a 400 whose description names the field. Timestamps are checked by
the emulator's own reading of the contract (timestamps.py), never by the gateway's helper."""

from __future__ import annotations

import re
from typing import Any

from gateway.emulator.timestamps import FORM, is_contract_ts

MAX_PASSINGS = 5000


class Invalid(Exception):
    def __init__(self, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.description = description
        self.status = status


_STR = "a string"
_OPT_STR = "a string or null"

BIND_FIELDS: dict[str, tuple[str, bool]] = {
    "model": (_STR, True),
    "serial_number": (_STR, True),
    "alias": (_OPT_STR, False),
    "firmware": (_OPT_STR, False),
    "type": (_OPT_STR, False),
}
# One page version of the vendor's bind also requires `type` (EmulatorConfig.bind_requires_type plays it).
BIND_FIELDS_TYPE_REQUIRED: dict[str, tuple[str, bool]] = {**BIND_FIELDS, "type": (_STR, True)}
SESSION_FIELDS: dict[str, tuple[str, bool]] = {"deviceid": (_STR, True), "alias": (_OPT_STR, False)}
PASSING_FIELDS = {
    "timestamp", "num_passing", "bib", "chip", "participant_id", "status", "timezone", "gender",
    "latitude", "longitude",
}  # fmt: skip
_HEX64 = re.compile(r"^[0-9A-F]{64}$")


def _is_str(v: Any, nullable: bool) -> bool:
    return isinstance(v, str) or (nullable and v is None)


def check_object(body: Any, fields: dict[str, tuple[str, bool]], where: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid(f"{where}: must be a JSON object")
    for key in body:
        if key not in fields:
            raise Invalid(f"{key}: unknown field")
    for key, (kind, required) in fields.items():
        if key not in body or (required and body[key] is None):
            if required:
                raise Invalid(f"{key}: required field missing")
            continue
        if not _is_str(body[key], nullable=kind == _OPT_STR):
            raise Invalid(f"{key}: must be {kind}")
        if required and not body[key]:
            raise Invalid(f"{key}: must not be empty")
    return body


def check_passings_body(body: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise Invalid("body: must be a JSON object")
    for key in body:
        if key not in ("token_session", "passings_list"):
            raise Invalid(f"{key}: unknown field")
    token = body.get("token_session")
    if token is None:
        raise Invalid("token_session: required field missing")
    if not isinstance(token, str):
        raise Invalid("token_session: must be a string")
    items = body.get("passings_list")
    if items is None:
        raise Invalid("passings_list: required field missing")
    if not isinstance(items, list):
        raise Invalid("passings_list: must be an array")
    if not items:
        raise Invalid("passings_list: must hold at least one passing")
    if len(items) > MAX_PASSINGS:
        raise Invalid(f"passings_list: {len(items)} passings, at most {MAX_PASSINGS} per request", status=413)
    for i, item in enumerate(items):
        check_passing(item, f"passings_list[{i}]")
    return token, items


def check_passing(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise Invalid(f"{where}: must be an object")
    for key in item:
        if key not in PASSING_FIELDS:
            raise Invalid(f"{where}.{key}: unknown field")
    for key in ("timestamp", "num_passing", "bib"):
        if item.get(key) is None:
            raise Invalid(f"{where}.{key}: required field missing")
    ts = item["timestamp"]
    if not is_contract_ts(ts):
        raise Invalid(f"{where}.timestamp: must be a {FORM} string (UTC)")
    num = item["num_passing"]
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise Invalid(f"{where}.num_passing: must be an integer >= 0")
    if not isinstance(item["bib"], str):
        raise Invalid(f"{where}.bib: must be a string")
    for key in ("chip", "participant_id", "status", "timezone", "gender"):
        if not _is_str(item.get(key), nullable=True):
            raise Invalid(f"{where}.{key}: must be a string or null")
    for key in ("latitude", "longitude"):
        v = item.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise Invalid(f"{where}.{key}: must be a number or null")


def query_int(query: Any, name: str, default: int | None, lo: int, hi: int | None = None) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise Invalid(f"{name}: must be an integer") from None
    if value < lo or (hi is not None and value > hi):
        raise Invalid(f"{name}: must be between {lo} and {hi}" if hi is not None else f"{name}: must be >= {lo}")
    return value


def query_ts(query: Any, name: str) -> str | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    if not is_contract_ts(text):
        raise Invalid(f"{name}: must be a {FORM} timestamp (UTC)")
    return str(text)


def looks_like_id(value: str) -> bool:
    return bool(_HEX64.match(value))
