"""What the package must never contain (ruff and `mypy --strict` run in `make lint`, not here)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_disables_tls_verification() -> None:
    for path in (ROOT / "gateway").rglob("*.py"):
        text = path.read_text()
        for forbidden in ("ssl=False", "verify_ssl", "CERT_NONE", "check_hostname = False"):
            assert forbidden not in text, f"{path.relative_to(ROOT)} contains {forbidden}"
