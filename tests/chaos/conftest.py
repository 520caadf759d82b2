"""What every chaos test shares: its figures handed to the closing JSON line (tests/chaos/report.py, which
prints it), and the API key searched for in everything it left behind or printed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.harness.supervisor import API_KEY, secret_leaks

FIGURES = "chaos_figures"  # tests/chaos/report.py reads this user property of the test's reports


@pytest.fixture(autouse=True)
def chaos_outputs(
    request: pytest.FixtureRequest, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """After each chaos test: put its figures in its report for the closing line, and fail it if the API key
    is in any file under its tmp_path (logs, databases, truth files, exports, status snapshots) or in what it
    printed or logged (this process and its children's inherited stdout/stderr)."""
    yield
    figures: dict[str, Any] = {}
    for path in sorted(tmp_path.rglob("figures.json")):
        try:
            figures[str(path.parent.relative_to(tmp_path))] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    if figures:
        kept = next(iter(figures.values())) if len(figures) == 1 else figures
        request.node.user_properties.append((FIGURES, json.dumps(kept, default=str)))
    out, err = capfd.readouterr()
    # back into the capture, so a failing test's report still shows what it printed
    sys.stdout.write(out)
    sys.stderr.write(err)
    logged = "\n".join(r.getMessage() for when in ("setup", "call") for r in caplog.get_records(when))
    leaks = secret_leaks(tmp_path, API_KEY)
    leaks += [f"captured {name}" for name, text in (("stdout", out), ("stderr", err), ("log", logged))
              if API_KEY in text]  # fmt: skip
    assert leaks == [], f"the API key leaked into: {leaks}"
