"""What every chaos test shares: its figures gathered into the one JSON line a run of tests/chaos ends with,
and the API key searched for in everything it left behind or printed.

The line is the last one pytest prints, after its own "N passed in Ts" summary, whenever at least one test of
tests/chaos ran (also inside the whole suite); without chaos tests nothing is added. It is one JSON object:

    {"chaos_tests": 56, "passed": 56, "failed": 0, "skipped": 0, "ok": true,
     "runs": {"test_crash_loop.py::test_crash_loop_with_network_faults": {...figures...}, ...}}

`runs` holds the figures of each test that wrote a `figures.json` under its tmp_path (the crash loop via
gateway.chaos.supervisor, the others via tests/chaos/harness.verdict); `ok` is false if a test failed or any
run's figures say ok false.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.chaos.supervisor import API_KEY, secret_leaks

# this session's: the conftest module is imported once per pytest run
_RUNS: dict[str, Any] = {}
_OUTCOMES: dict[str, str] = {}  # nodeid: passed, failed or skipped


def _short(nodeid: str) -> str:
    return nodeid.rsplit("/", 1)[-1]


@pytest.fixture(autouse=True)
def chaos_outputs(
    request: pytest.FixtureRequest, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """After each chaos test: keep its figures for the closing line, and fail it if the API key is in any
    file under its tmp_path (logs, databases, truth files, exports, status snapshots) or in what it printed
    or logged (this process and its children's inherited stdout/stderr)."""
    yield
    figures: dict[str, Any] = {}
    for path in sorted(tmp_path.rglob("figures.json")):
        try:
            figures[str(path.parent.relative_to(tmp_path))] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    if figures:
        _RUNS[_short(request.node.nodeid)] = next(iter(figures.values())) if len(figures) == 1 else figures
    out, err = capfd.readouterr()
    # back into the capture, so a failing test's report still shows what it printed
    sys.stdout.write(out)
    sys.stderr.write(err)
    logged = "\n".join(r.getMessage() for when in ("setup", "call") for r in caplog.get_records(when))
    leaks = secret_leaks(tmp_path, API_KEY)
    leaks += [f"captured {name}" for name, text in (("stdout", out), ("stderr", err), ("log", logged))
              if API_KEY in text]  # fmt: skip
    assert leaks == [], f"the API key leaked into: {leaks}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # called for the tests of this directory only (a conftest's hooks are scoped to its directory)
    before = _OUTCOMES.get(report.nodeid)
    if report.failed:  # in setup, call or teardown (e.g. a leak found after the test itself passed)
        _OUTCOMES[report.nodeid] = "failed"
    elif report.skipped and before != "failed":
        _OUTCOMES[report.nodeid] = "skipped"
    elif before is None:
        _OUTCOMES[report.nodeid] = "passed"


def pytest_unconfigure(config: pytest.Config) -> None:
    """The closing line: after pytest's own summary, so it is the last line of the output."""
    outcomes, runs = Counter(_OUTCOMES.values()), _RUNS
    total = len(_OUTCOMES)
    if not total:
        return

    def run_ok(f: Any) -> bool:
        if isinstance(f, dict) and "ok" in f:
            return bool(f["ok"])
        return isinstance(f, dict) and all(run_ok(v) for v in f.values())

    line = json.dumps({
        "chaos_tests": total,
        "passed": outcomes["passed"],
        "failed": outcomes["failed"],
        "skipped": outcomes["skipped"],
        "ok": outcomes["failed"] == 0 and all(run_ok(f) for f in runs.values()),
        "runs": dict(sorted(runs.items())),
    }, sort_keys=False, separators=(",", ":"), default=str)  # fmt: skip
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line, flush=True)
