"""What `pip install .` puts on a Pi: the gateway's modules and their data files, and no test code.

The wheel is built here by setuptools' own PEP 517 backend from a clean copy of the checkout (the backend pip
calls, without pip and without the network; a copy because setuptools' build/ directory keeps files deleted
since the last build and would ship them).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")
TEST_ONLY = {"pytest", "hypothesis", "tests"}  # top-level modules only the test suite has


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("src") / "checkout"
    shutil.copytree(ROOT, src, ignore=SKIP)
    out = tmp_path_factory.mktemp("wheel")
    code = f"import setuptools.build_meta as b; print(b.build_wheel({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return zipfile.ZipFile(out / proc.stdout.strip().splitlines()[-1])


def test_the_wheel_holds_only_the_gateway_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {PurePosixPath(n).parts[0] for n in names}
    meta = {t for t in tops if t.startswith("rufus_gateway-") and t.endswith(".dist-info")}
    assert len(meta) == 1 and tops - meta == {"gateway"}, sorted(tops)
    # what the daemon, the status page and the crew's commands need on the Pi
    for needed in ("gateway/cli.py", "gateway/service.py", "gateway/py.typed", "gateway/status/server.py"):
        assert needed in names
    assert any(n.startswith("gateway/") and n.endswith(".html") for n in names), "the status page's HTML"


def test_no_test_harness_ships(wheel: zipfile.ZipFile) -> None:
    shipped = [n for n in wheel.namelist() if n.endswith(".py")]
    harness = [n for n in shipped if {"chaos", "tests", "conftest.py"} & set(PurePosixPath(n).parts)]
    assert harness == [], f"test code in the wheel: {harness}"
    for name in shipped:
        tree = ast.parse(wheel.read(name), name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            bad = [m for m in mods if m.split(".")[0] in TEST_ONLY]
            assert not bad, f"{name}:{node.lineno} imports {bad[0]}, which a Pi does not have"
