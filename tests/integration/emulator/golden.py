"""Runs the data-driven golden cases in tests/data/api_golden/ (format in its README) over HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "data" / "api_golden"
KEY_TYPES = {
    "rw": ("READ_WRITE", True),
    "rw_nounbind": ("READ_WRITE", False),
    "read": ("READ", False),
    "write": ("WRITE", False),
    "write_unbind": ("WRITE", True),
}


def load_scenarios() -> list[dict[str, Any]]:
    scenarios: list[dict[str, Any]] = []
    for path in sorted(GOLDEN_DIR.glob("*.json")):
        scenarios.extend(json.loads(path.read_text()))
    return scenarios


def substitute(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\{(\w+)\}", lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        if "$passings" in value:
            return [
                {"timestamp": f"2026-05-01T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z",
                 "num_passing": i + 1, "bib": str(i + 1)}
                for i in range(int(value["$passings"]))
            ]  # fmt: skip
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


def subset_mismatch(expected: Any, actual: Any, where: str = "body") -> str | None:
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{where}.{key}: missing (have {sorted(actual)})"
            problem = subset_mismatch(value, actual[key], f"{where}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where}: expected a list of {len(expected)}, got {actual!r}"[:400]
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problem = subset_mismatch(e, a, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if type(expected) is not type(actual) or expected != actual:
        return f"{where}: expected {expected!r}, got {actual!r}"
    return None


def exact_mismatch(expected: Any, actual: Any, where: str = "body") -> str | None:
    """Whole-value equality (no key more, none less), except where `expected` holds a matcher:
    `{"$match": regex}` (re.match against a string) or `{"$contains": text}` (a string holding text)."""
    if isinstance(expected, dict) and len(expected) == 1 and next(iter(expected)) in ("$match", "$contains"):
        ((op, arg),) = expected.items()
        if not isinstance(actual, str):
            return f"{where}: expected a string ({op} {arg!r}), got {actual!r}"
        ok = re.match(arg, actual) if op == "$match" else arg in actual
        return None if ok else f"{where}: {actual!r} does not satisfy {op} {arg!r}"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r}"
        if set(expected) != set(actual):
            extra, missing = sorted(set(actual) - set(expected)), sorted(set(expected) - set(actual))
            return f"{where}: keys differ: unexpected {extra}, missing {missing} in {actual!r}"[:400]
        for key, value in expected.items():
            problem = exact_mismatch(value, actual[key], f"{where}.{key}")
            if problem:
                return problem
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where}: expected a list of {len(expected)}, got {actual!r}"[:400]
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problem = exact_mismatch(e, a, f"{where}[{i}]")
            if problem:
                return problem
        return None
    if type(expected) is not type(actual) or expected != actual:
        return f"{where}: expected {expected!r}, got {actual!r}"
    return None


async def run_scenario(
    http: aiohttp.ClientSession, base_url: str, keys: dict[str, str], dialect: str, scenario: dict[str, Any]
) -> None:
    variables: dict[str, str] = {}
    for n, step in enumerate(scenario["steps"]):
        label = f"{scenario['name']} / step {n} {step['method']} {step['path']}"
        headers = {}
        key = step.get("key")
        if key is not None:
            headers[step.get("header", "api_key")] = keys.get(key, key)
        data = None
        if "body" in step:
            data = json.dumps(substitute(step["body"], variables))
            headers["Content-Type"] = "application/json"
        path = substitute(step["path"], variables)
        async with http.request(step["method"], base_url + path, data=data, headers=headers) as resp:
            status = resp.status
            payload = await resp.json(content_type=None)
        allowed = step["expect_status"] if isinstance(step["expect_status"], list) else [step["expect_status"]]
        assert status in allowed, f"{label}: status {status}, expected {allowed}; body {payload!r}"[:800]
        if dialect == "enveloped":
            assert isinstance(payload, dict) and set(payload) == {"body"}, f"{label}: not enveloped: {payload!r}"
            body = payload["body"]
        else:
            assert isinstance(payload, dict) and "body" not in payload, f"{label}: not bare: {payload!r}"
            body = payload
        assert isinstance(body, dict), f"{label}: body is not an object: {body!r}"
        if status >= 400:
            assert isinstance(body.get("description"), str) and body["description"], f"{label}: no description"
        problem = subset_mismatch(substitute(step.get("expect_body", {}), variables), body)
        assert problem is None, f"{label}: {problem}"
        if "expect_exact_body" in step:
            problem = exact_mismatch(substitute(step["expect_exact_body"], variables), body)
            assert problem is None, f"{label}: {problem}"
        for field, text in step.get("expect_contains", {}).items():
            assert text in str(body.get(field)), f"{label}: {field}={body.get(field)!r} does not mention {text!r}"
        for field, pattern in step.get("expect_match", {}).items():
            assert re.match(pattern, str(body.get(field))), f"{label}: {field}={body.get(field)!r} !~ {pattern}"
        for field, required in step.get("expect_keys", {}).items():
            missing = set(required) - set(body[field])
            assert not missing, f"{label}: {field} lacks {sorted(missing)}"
        for field, required in step.get("expect_item_keys", {}).items():
            for item in body[field]:
                missing = set(required) - set(item)
                assert not missing, f"{label}: an item of {field} lacks {sorted(missing)}"
        for field, length in step.get("expect_len", {}).items():
            assert len(body[field]) == length, f"{label}: len({field}) = {len(body[field])}, expected {length}"
        for var, field in step.get("save", {}).items():
            variables[var] = str(body[field])
