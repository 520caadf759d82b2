"""The one JSON line a run with chaos tests ends with (loaded for the whole suite from tests/conftest.py).

The line is the last one pytest prints, after its own "N passed in Ts" summary, whenever at least one chaos
test ran (also inside the whole suite); without chaos tests nothing is added. It is one JSON object:

    {"chaos_tests": 56, "passed": 56, "failed": 0, "skipped": 0, "ok": true,
     "runs": {"test_crash_loop.py::test_crash_loop_with_network_faults": {...figures...}, ...}}

A chaos test is one under a `chaos` directory (or marked `chaos`): its report's keywords say so. `runs` holds
the figures each test's autouse fixture (tests/chaos/conftest.py) put in its report's user_properties; `ok`
is false if a test failed or any run's figures say ok false.

Everything travels in the test reports, so under pytest-xdist the controller, which gets every worker's
reports, prints the same line (the workers print nothing): a plugin, not a conftest of tests/chaos, because
the controller collects no test and so never loads that directory's conftest.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

FIGURES = "chaos_figures"  # the user_properties key the fixture uses

_RUNS: dict[str, Any] = {}
_OUTCOMES: dict[str, str] = {}  # nodeid: passed, failed or skipped


def _short(nodeid: str) -> str:
    return nodeid.rsplit("/", 1)[-1]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "chaos" not in report.keywords:
        return
    for key, value in report.user_properties:
        if key == FIGURES:
            _RUNS[_short(report.nodeid)] = json.loads(value)
    before = _OUTCOMES.get(report.nodeid)
    if report.failed:  # in setup, call or teardown (e.g. a leak found after the test itself passed)
        _OUTCOMES[report.nodeid] = "failed"
    elif report.skipped and before != "failed":
        _OUTCOMES[report.nodeid] = "skipped"
    elif before is None:
        _OUTCOMES[report.nodeid] = "passed"


def _run_ok(f: Any) -> bool:
    if isinstance(f, dict) and "ok" in f:
        return bool(f["ok"])
    return isinstance(f, dict) and all(_run_ok(v) for v in f.values())


def pytest_unconfigure(config: pytest.Config) -> None:
    """The closing line: after pytest's own summary, so it is the last line of the output."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller prints it
        return
    outcomes, runs = Counter(_OUTCOMES.values()), _RUNS
    total = len(_OUTCOMES)
    if not total:
        return
    line = json.dumps({
        "chaos_tests": total,
        "passed": outcomes["passed"],
        "failed": outcomes["failed"],
        "skipped": outcomes["skipped"],
        "ok": outcomes["failed"] == 0 and all(_run_ok(f) for f in runs.values()),
        "runs": dict(sorted(runs.items())),
    }, sort_keys=False, separators=(",", ":"), default=str)  # fmt: skip
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    else:
        print(line, flush=True)
