"""Golden lines per format (tests/data/formats/*.json), written from the protocols' layouts before the parsers.

Each case runs whole and again one byte at a time: framing must not change what a line means. One test per
format (not per case) keeps the suite fast under the per-test leak check; a failure lists every bad case."""

from __future__ import annotations

import pytest

from gateway import formats
from tests.unit.formats.helpers import case_bytes, describe, golden_cases, make_ctx, matches, run

CASES = golden_cases()
FORMATS = sorted({f for f, _, _ in CASES})


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_golden(fmt_name: str) -> None:
    fmt = formats.get(fmt_name)
    failures: list[str] = []
    cases = [(ctx, case) for f, ctx, case in CASES if f == fmt_name]
    assert len(cases) >= 10, "each format needs its nasty cases"
    for ctx_spec, case in cases:
        for chunk in (None, 1):
            results = run(fmt, case_bytes(case), make_ctx(ctx_spec), chunk=chunk)
            got = [describe(r) for r in results]
            ok = len(results) == len(case["expect"]) and all(
                matches(e, r) for e, r in zip(case["expect"], results, strict=False)
            )
            if not ok:
                failures.append(f"{case['name']} (chunk={chunk}): want {case['expect']}, got {got}")
    assert not failures, "\n".join(failures)


def test_every_registered_format_has_golden_lines() -> None:
    assert set(formats.names()) == set(FORMATS)
