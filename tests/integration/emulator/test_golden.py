"""The contract page's golden cases (tests/data/api_golden/) against the emulator, in both dialects."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gateway.emulator import ApiKey
from tests.fixtures.emulator import make_key
from tests.integration.emulator.golden import (
    KEY_TYPES,
    exact_mismatch,
    load_scenarios,
    run_scenario,
    subset_mismatch,
    substitute,
)

SCENARIOS = load_scenarios()


@pytest.mark.parametrize("dialect", ["enveloped", "bare"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s["name"] for s in SCENARIOS])
async def test_golden(scenario: dict[str, Any], dialect: str, emulator_factory: Callable[..., Any]) -> None:
    keys = {name: make_key() for name in KEY_TYPES}
    emu = await emulator_factory(
        dialect=dialect,
        api_keys=[ApiKey(keys[n], access, unbind) for n, (access, unbind) in KEY_TYPES.items()],
        **scenario.get("emulator", {}),  # e.g. bind_requires_type: where the vendor's pages disagree
    )
    async with aiohttp.ClientSession() as http:
        await run_scenario(http, emu.base_url, keys, dialect, scenario)


def test_golden_files_cover_every_endpoint() -> None:
    """The cases must exercise all twelve endpoints of the contract table, success and failure."""
    seen: dict[tuple[str, str], set[int]] = {}
    patterns = {
        ("POST", "/devices"): r"^/devices$",
        ("DELETE", "/devices/{id}"): r"^/devices/[^/?]+$",
        ("GET", "/devices"): r"^/devices(\?.*)?$",
        ("GET", "/devices/{id}"): r"^/devices/[^/?]+$",
        ("POST", "/sessions"): r"^/sessions$",
        ("PATCH", "/sessions/close/{t}"): r"^/sessions/close/[^/]+$",
        ("GET", "/sessions/device/{id}"): r"^/sessions/device/[^/]+$",
        ("GET", "/sessions/device/{id}/active"): r"^/sessions/device/[^/]+/active$",
        ("GET", "/sessions/{t}"): r"^/sessions/(?!device/)[^/]+$",
        ("POST", "/passings"): r"^/passings$",
        ("GET", "/passings/session/{t}"): r"^/passings/session/[^/?]+(\?.*)?$",
        ("GET", "/passings/device/{id}"): r"^/passings/device/[^/?]+(\?.*)?$",
    }
    for scenario in SCENARIOS:
        for step in scenario["steps"]:
            for (method, name), pattern in patterns.items():
                if step["method"] == method and re.match(pattern, step["path"]):
                    expected = step["expect_status"]
                    statuses = expected if isinstance(expected, list) else [expected]
                    seen.setdefault((method, name), set()).update(statuses)
    for endpoint in patterns:
        assert endpoint in seen, f"no golden case for {endpoint}"
        codes = seen[endpoint]
        assert any(c < 300 for c in codes) and any(c >= 400 for c in codes), f"{endpoint}: only {codes}"


def test_subset_matcher_rejects_mismatches() -> None:
    # the runner itself must be able to fail, or the golden tests prove nothing
    assert subset_mismatch({"a": 1}, {"a": 1, "b": 2}) is None
    assert subset_mismatch({"a": 1}, {"a": "1"}) is not None
    assert subset_mismatch({"a": True}, {"a": 1}) is not None
    assert subset_mismatch([{"n": 1}], [{"n": 1}, {"n": 2}]) is not None
    assert subset_mismatch({"r": [{"n": 2}]}, {"r": [{"n": 1}]}) is not None
    assert substitute({"p": "/x/{d}"}, {"d": "ABC"}) == {"p": "/x/ABC"}
    assert len(substitute({"$passings": 3}, {})) == 3


def test_error_and_write_steps_pin_the_whole_body() -> None:
    """The contract shows each error body and each write's answer in full: a field it does not show is a
    difference from the vendor, so those steps compare the whole body, not a subset."""
    for scenario in SCENARIOS:
        for n, step in enumerate(scenario["steps"]):
            expected = step["expect_status"]
            statuses = expected if isinstance(expected, list) else [expected]
            if min(statuses) >= 400 or step["method"] != "GET":
                assert "expect_exact_body" in step, f"{scenario['name']} / step {n}: no expect_exact_body"


def test_exact_matcher_rejects_extra_and_missing_fields() -> None:
    assert exact_mismatch({"description": "Sessions not found"}, {"description": "Sessions not found"}) is None
    assert exact_mismatch({"description": "Sessions not found"}, {"description": "Sessions not found", "deviceid": "A"})
    assert exact_mismatch({"description": "x", "deviceid": "A"}, {"description": "x"})
    assert exact_mismatch({"n": 1}, {"n": True})
    assert exact_mismatch({"r": [{"n": 1}]}, {"r": [{"n": 1, "m": 2}]})
    assert exact_mismatch({"d": {"$match": "^[0-9A-F]{4}$"}}, {"d": "AB12"}) is None
    assert exact_mismatch({"d": {"$match": "^[0-9A-F]{4}$"}}, {"d": "ab12"})
    assert exact_mismatch({"d": {"$contains": "model"}}, {"d": "model: required field missing"}) is None
    assert exact_mismatch({"d": {"$contains": "model"}}, {"d": 1})
