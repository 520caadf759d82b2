"""The emulator reads timestamps as the vendor's contract writes them (`YYYY-MM-DDTHH:mm:ss.sssZ`, always
milliseconds, always `Z`, UTC), on its own: where the gateway's helper is looser, the emulator still refuses,
so a gateway whose format drifts is caught by its stand-in instead of being agreed with."""

from __future__ import annotations

import ast
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.emulator import Emulator
from gateway.model import is_cloud_ts

EMULATOR = Path(__file__).resolve().parents[3] / "gateway" / "emulator"

# Not the contract's form, and the gateway's own helper (model.is_cloud_ts) says so too.
BOTH_REFUSE = [
    "2026-05-01T09:00:01Z",  # no milliseconds
    "2026-05-01T09:00:01.000+00:00",  # an offset instead of Z
    "2026-05-01T09:00:01.000z",  # lowercase z
    "2026-05-01T09:00:01.0000000Z",  # 7 fraction digits
    "2026-05-01T09:00:01.00Z",  # 2 fraction digits
    "2026-05-01 09:00:01.000Z",  # a space for the T
    "2026-5-1T09:00:01.000Z",  # unpadded fields
    "",
]
# Not the contract's form (or no real instant), yet the gateway's helper accepts each: the edges it misses.
GATEWAY_ACCEPTS = [
    "2026-13-01T09:00:01.000Z",  # month 13
    "2026-00-10T09:00:01.000Z",  # month 0
    "2026-02-30T09:00:01.000Z",  # 30 February
    "2027-02-29T09:00:01.000Z",  # 29 February of a common year
    "2026-05-01T24:00:00.000Z",  # hour 24
    "2026-05-01T09:60:01.000Z",  # minute 60
    "2026-05-01T09:00:60.000Z",  # second 60
    "0000-05-01T09:00:01.000Z",  # year 0
    "2026-05-01T09:00:01.000Z\n",  # a trailing newline ($ matches before it)
    "٢٠٢٦-05-01T09:00:01.000Z",  # Arabic-Indic digits (\d matches them)
    "２０２６-05-01T09:00:01.000Z",  # fullwidth digits
]
EXACT = ["2026-05-01T09:00:01.000Z", "2028-02-29T23:59:59.999Z", "1999-12-31T00:00:00.000Z"]


async def call(emu: Emulator, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, emu.base_url + path, json=body, params=params, headers={"api_key": emu.api_key}) as r,
    ):
        return r.status, await r.json(content_type=None)


async def session(emu: Emulator) -> tuple[str, str]:
    _, bound = await call(emu, "POST", "/devices", {"model": "One4All", "serial_number": "S1"})
    deviceid = bound["deviceid"]
    _, opened = await call(emu, "POST", "/sessions", {"deviceid": deviceid})
    return deviceid, opened["token_session"]


def test_the_cases_are_what_they_claim() -> None:
    """Each looser case really is one the gateway's helper accepts, so the HTTP tests below are not vacuous."""
    assert [t for t in BOTH_REFUSE if is_cloud_ts(t)] == []
    assert [t for t in GATEWAY_ACCEPTS if not is_cloud_ts(t)] == []


@pytest.mark.parametrize("ts", BOTH_REFUSE + GATEWAY_ACCEPTS)
async def test_a_passing_with_a_timestamp_outside_the_contract_is_a_400_naming_it(
    emulator_bare: Emulator, ts: str
) -> None:
    _, token = await session(emulator_bare)
    body = {"token_session": token, "passings_list": [{"timestamp": ts, "num_passing": 1, "bib": "7"}]}
    status, reply = await call(emulator_bare, "POST", "/passings", body)
    assert status == 400
    assert reply["description"].startswith("passings_list[0].timestamp: must be a YYYY-MM-DDTHH:mm:ss.sssZ")
    assert emulator_bare.store is not None
    assert emulator_bare.store.passings_of(token, 100) == []


@pytest.mark.parametrize("ts", BOTH_REFUSE[:3] + GATEWAY_ACCEPTS)
async def test_a_range_query_outside_the_contract_is_a_400(emulator_bare: Emulator, ts: str) -> None:
    deviceid, _ = await session(emulator_bare)
    status, reply = await call(emulator_bare, "GET", f"/passings/device/{deviceid}", **{"from": ts})
    assert status == 400 and reply["description"].startswith("from: must be a YYYY-MM-DDTHH:mm:ss.sssZ")


async def test_the_exact_form_is_accepted_and_kept_as_sent(emulator_bare: Emulator) -> None:
    deviceid, token = await session(emulator_bare)
    items = [{"timestamp": ts, "num_passing": n, "bib": str(n)} for n, ts in enumerate(EXACT, start=1)]
    status, _ = await call(emulator_bare, "POST", "/passings", {"token_session": token, "passings_list": items})
    assert 200 <= status < 300
    assert emulator_bare.store is not None
    assert sorted(p["timestamp"] for p in emulator_bare.store.passings_of(token, 100)) == sorted(EXACT)
    status, _ = await call(emulator_bare, "GET", f"/passings/device/{deviceid}", **{"from": EXACT[2], "to": EXACT[1]})
    assert status == 200


def test_the_emulator_shares_no_timestamp_code_with_the_gateway() -> None:
    """Nothing under gateway/emulator imports the gateway's model (where its timestamp helpers live)."""
    offenders = []
    for path in sorted(EMULATOR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any(n == "gateway.model" or n.startswith("gateway.model.") for n in names):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def _by_the_contract(value: str) -> bool:
    """The contract's form read character by character: the definition the emulator's check must equal."""
    form = "YYYY-MM-DDTHH:mm:ss.sssZ"
    if len(value) != len(form):
        return False
    for got, want in zip(value, form, strict=True):
        if want.isalpha() and want not in "TZ":
            if got not in "0123456789":
                return False
        elif got != want:
            return False
    try:
        datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]), int(value[11:13]), int(value[14:16]),
                 int(value[17:19]), tzinfo=UTC)  # fmt: skip
    except ValueError:
        return False
    return True


def test_the_check_equals_the_contract_on_every_one_or_two_character_change() -> None:
    from gateway.emulator.timestamps import is_contract_ts

    rnd = random.Random(5)
    base, alphabet = "2026-05-03T09:00:00.123Z", "0123456789-T:.Zz +\n\u0663\uff11"
    accepted = 0
    for _ in range(40_000):
        chars = list(base)
        for _ in range(rnd.randrange(1, 3)):
            chars[rnd.randrange(len(chars))] = rnd.choice(alphabet)
        value = "".join(chars)
        assert is_contract_ts(value) == _by_the_contract(value), value
        accepted += _by_the_contract(value)
    assert 1000 < accepted < 39_000  # both sides of the line were exercised
