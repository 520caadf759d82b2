"""Golden lines per format (tests/data/formats/*.json), written from the protocols' layouts before the parsers.

Each case runs whole and again one byte at a time: framing must not change what a line means."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import formats
from tests.formats.helpers import case_bytes, describe, golden_cases, make_ctx, matches, run

CASES = golden_cases()


@pytest.mark.parametrize(("fmt_name", "ctx_spec", "case"), CASES, ids=[f"{f}:{c['name']}" for f, _, c in CASES])
def test_golden(fmt_name: str, ctx_spec: dict[str, Any], case: dict[str, Any]) -> None:
    fmt = formats.get(fmt_name)
    for chunk in (None, 1):
        results = run(fmt, case_bytes(case), make_ctx(ctx_spec), chunk=chunk)
        got = [describe(r) for r in results]
        assert len(results) == len(case["expect"]), (chunk, got)
        for expected, result in zip(case["expect"], results, strict=True):
            assert matches(expected, result), (chunk, expected, describe(result))


def test_every_registered_format_has_golden_lines() -> None:
    covered = {f for f, _, _ in CASES}
    assert set(formats.names()) <= covered
