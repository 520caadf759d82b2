"""A logged exception shows its frames but not their local variables, in JSON and on a terminal: a local can
hold a secret nobody registered (a request's headers, a token read from a file)."""

from __future__ import annotations

import io

import pytest

from gateway import log


def _fail_holding(value: str) -> None:
    held = {"authorization": "Bearer " + value, "note": value}  # a local a traceback with locals would print
    raise RuntimeError(f"boom in a frame holding {len(held)} values")


@pytest.mark.parametrize("json", [True, False])
def test_exception_logs_carry_no_frame_locals(json: bool) -> None:
    buf = io.StringIO()
    log.configure("debug", stream=buf, json=json)
    unregistered = "tok-5f1e" + "9" * 16
    try:
        _fail_holding(unregistered)
    except RuntimeError:
        log.get_logger("t").exception("task crashed")
    out = buf.getvalue()
    assert "boom in a frame holding 2 values" in out and "_fail_holding" in out  # the traceback is there
    assert unregistered not in out
