"""tests/chaos/conftest.py, run by pytest itself (pytester, in a subprocess): a run with chaos tests ends with
one JSON line of their figures, after pytest's own summary and counting only the chaos directory; a test that
leaves the API key in a file or in its output fails; a run without chaos tests gets no extra line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chaos.harness.supervisor import API_KEY

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.chaos

ROOT = Path(__file__).resolve().parents[2]
CONFTEST = Path(__file__).with_name("conftest.py")
REPORT = Path(__file__).with_name("report.py")

CHAOS_TESTS = f'''
import json, logging

def test_with_figures(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "figures.json").write_text(json.dumps({{"ok": True, "kills": 3}}))

def test_without_figures():
    pass

def test_key_left_in_a_file(tmp_path):
    (tmp_path / "daemon-001.log").write_text("api_key={API_KEY}")

def test_key_printed():
    print("talking to the cloud with {API_KEY}")

def test_key_logged():
    logging.getLogger("x").warning("key %s", "{API_KEY}")
'''


def _tree(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    (pytester.path / "chaos_report.py").write_text(REPORT.read_text())
    pytester.makeconftest('pytest_plugins = ["chaos_report"]\n')  # as tests/conftest.py loads it
    chaos = pytester.mkpydir("chaos")
    (chaos / "conftest.py").write_text(CONFTEST.read_text())
    (chaos / "test_inner.py").write_text(CHAOS_TESTS)
    other = pytester.mkpydir("other")
    (other / "test_other.py").write_text("def test_plain():\n    pass\n")


@pytest.mark.parametrize("workers", [None, 2], ids=["serial", "xdist"])
def test_a_run_with_chaos_tests_ends_with_one_json_line(
    pytester: pytest.Pytester, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, workers: int | None
) -> None:
    _tree(pytester)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the chaos conftest imports the harness from tests/chaos/harness
    xdist = ["-n", str(workers)] if workers else []  # the controller prints the line from its workers' reports
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", *xdist)
    capfd.readouterr()  # the inner run's report, echoed here, holds the key on purpose: not a leak of ours
    lines = [line for line in result.outlines if line.strip()]
    figures = json.loads(lines[-1])
    assert "6 passed, 3 errors in" in lines[-2], lines[-2:]  # pytest's own summary, just before
    assert sum(line.lstrip().startswith("{") for line in lines) == 1, "one JSON line, no other"
    assert figures["chaos_tests"] == 5 and figures["passed"] == 2 and figures["failed"] == 3  # not other/
    assert figures["ok"] is False
    assert figures["runs"] == {"test_inner.py::test_with_figures": {"ok": True, "kills": 3}}
    text = "\n".join(result.outlines)
    for name in ("test_key_left_in_a_file", "test_key_printed", "test_key_logged"):
        assert f"ERROR chaos/test_inner.py::{name}" in text, name
    for where in ("['daemon-001.log:1']", "['captured stdout']", "['captured log']"):
        assert f"AssertionError: the API key leaked into: {where}" in text, where


def test_a_run_without_chaos_tests_gets_no_extra_line(pytester: pytest.Pytester) -> None:
    _tree(pytester)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "other")
    assert result.ret == 0
    last = [line for line in result.outlines if line.strip()][-1]
    assert "1 passed" in last and not last.lstrip().startswith("{")
