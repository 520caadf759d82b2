"""The style the project promises (design.md): ruff clean, `mypy --strict` clean on gateway/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_is_clean() -> None:
    dirs = [d for d in ("gateway", "tests", "benchmarks") if (ROOT / d).is_dir()]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", *dirs],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_is_clean_on_the_package() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_nothing_disables_tls_verification() -> None:
    for path in (ROOT / "gateway").rglob("*.py"):
        text = path.read_text()
        for forbidden in ("ssl=False", "verify_ssl", "CERT_NONE", "check_hostname = False"):
            assert forbidden not in text, f"{path.relative_to(ROOT)} contains {forbidden}"
