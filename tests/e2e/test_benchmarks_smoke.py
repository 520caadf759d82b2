"""Each benchmark script's --quick run: exits 0, prints a table, and ends with ONE JSON line carrying its
figures and a positive ratio. No timing is asserted (speed belongs to the figures, not to a test); what is
asserted are facts the scripts report that do not depend on the machine: all formats measured, requests
counted, transactions fewer than reads when submissions are concurrent.

benchmarks/chaos.py is the exception: its --quick run (a real crash loop, ~40 s) prints no table, only the
JSON line, and the run must be ok: nothing lost or doubled, every failpoint hit, every network phase run."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gateway import formats

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

EXPECTED_KEYS = {
    "journal": {
        "naive_reads_per_s",
        "group_reads_per_s",
        "ratio",
        "naive_txn_per_read",
        "group_txn_per_read",
        "group_latency_p50_ms",
        "group_latency_p99_ms",
        "peak_rss_mb",
        "scenarios",
        "fsync_ms",
    },
    "parse": {"formats", "ratio", "worst_format", "worst_ratio", "min_records_per_s", "peak_rss_mb"},
    "upload": {
        "batched_passings_per_s",
        "single_passings_per_s",
        "ratio",
        "runs",
        "latency_ratio",
        "batched_latency_passings_per_s",
        "single_latency_passings_per_s",
        "peak_rss_mb",
    },
}


def run_quick(name: str, cwd: Path) -> dict[str, Any]:
    """Run `benchmarks/<name>.py --quick` in `cwd`; check what every script promises; return its figures."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{name}.py --quick exited {proc.returncode}: {proc.stderr[-2000:]}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 2, f"{name}.py printed no table before its figures: {proc.stdout!r}"
    assert not any(line.lstrip().startswith("{") for line in lines[:-1]), "only the last line is JSON"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict)
    assert EXPECTED_KEYS[name] <= figures.keys(), f"missing {EXPECTED_KEYS[name] - figures.keys()}"
    assert figures["benchmark"] == name and figures["quick"] is True
    assert figures["ratio"] > 0
    assert figures["peak_rss_mb"] > 0
    assert list(cwd.iterdir()) == [], "the run left files behind"
    return figures


def test_journal_figures_describe_the_runs(tmp_path: Path) -> None:
    f = run_quick("journal", tmp_path)
    assert f["naive_txn_per_read"] == 1.0
    assert 0 < f["group_txn_per_read"] <= 1.0
    # 64 submitters waiting at once cannot each have had a transaction of their own
    assert 0 < f["scenarios"]["group 64x1"]["txn_per_read"] < 1.0
    for s in f["scenarios"].values():
        assert s["reads"] > 0 and s["reads_per_s"] > 0 and s["ratio"] > 0
        assert 0 < s["latency_p50_ms"] <= s["latency_p99_ms"]


def test_parse_measures_every_format(tmp_path: Path) -> None:
    f = run_quick("parse", tmp_path)
    assert sorted(f["formats"]) == formats.names()
    for name, r in f["formats"].items():
        assert r["reads"] > 0 and r["records"] >= r["reads"], name
        assert r["records_per_s"] > 0 and r["baseline_records_per_s"] > 0 and r["ratio"] > 0, name
    assert f["worst_format"] in f["formats"]


def test_upload_counts_requests(tmp_path: Path) -> None:
    f = run_quick("upload", tmp_path)
    runs = f["runs"]
    single = [r for r in runs.values() if r["batch_size"] == 1]
    batched = [r for r in runs.values() if r["batch_size"] == 500]
    assert len(single) == 2 and len(batched) == 2
    for r in single:
        assert r["requests"] == r["passings"]  # one POST per passing, no retries on a healthy loopback
    for r in batched:
        assert r["requests"] == -(-r["passings"] // 500)
    assert f["latency_ratio"] > 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_quick_run_is_ok_and_one_json_line(tmp_path: Path) -> None:
    from tests.chaos.harness.supervisor import FAILPOINTS, PHASES

    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "chaos.py"), "--quick"],
        cwd=tmp_path, capture_output=True, text=True, timeout=220, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"chaos.py --quick exited {proc.returncode}: {proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout must be the figures line alone: {proc.stdout[-2000:]!r}"
    f = json.loads(lines[0])
    assert f["benchmark"] == "chaos" and f["quick"] is True and f["profile"] == "quick"
    assert f["ok"] is True and f["coverage_gaps"] == 0 and f["secret_leaks"] == 0
    assert f["kills"] >= 6 and all(f["kills_failpoint"].get(p, 0) >= 1 for p in FAILPOINTS)
    assert all(f["network_phases"].get(p, 0) >= 1 for p in PHASES)
    assert f["reads_acked"] == f["reads_sent"] == f["reads_journaled"] > 0 and f["sigterm_exit"] == 0
    assert list(tmp_path.iterdir()) == [], "a passing run leaves nothing behind"


RUN_KEYS = {
    "ingest_reads_per_s",
    "ingest_ceiling_rows_per_s",
    "ingest_ratio",
    "drain_passings_per_s",
    "drain_naive_per_s",
    "drain_ratio",
    "latency_p50_ms",
    "latency_p99_ms",
    "recovery_s",
    "rss_mb",
    "startup_s",
    "startup_after_kill_s",  # ours: the start after a power cut, integrity check before READY
}
TINY = ["--ingest", "300", "--drain", "300", "--naive", "10", "--latency-s", "0.5", "--recovery", "50"]
TINY += ["--rows", "500", "--runners", "20", "--ingest-runs", "2"]


@pytest.mark.timeout(90)
def test_run_quick_at_tiny_sizes_reports_every_goal() -> None:
    """benchmarks/run.py drives real daemons: its figures line carries every key issue 13 names, the sizes
    it was given, a parser figure per format, and exit 0 without --strict whatever the figures are. It runs in
    a short directory under /tmp: each daemon's control socket sits beside its database, and pytest's own
    tmp_path under xdist is deep enough to pass the 107 bytes a unix socket path may have."""
    with tempfile.TemporaryDirectory(prefix="rb-") as short:
        tmp_path = Path(short)
        proc = subprocess.run(
            [sys.executable, str(BENCHMARKS / "run.py"), "--quick", *TINY],
            cwd=tmp_path, capture_output=True, text=True, timeout=85, check=False,
        )  # fmt: skip
        left = list(tmp_path.iterdir())
    assert proc.returncode == 0, f"run.py --quick exited {proc.returncode}: {proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    assert len(lines) >= 2 and not any(line.lstrip().startswith("{") for line in lines[:-1])
    f = json.loads(lines[-1])
    assert RUN_KEYS <= f.keys(), f"missing {RUN_KEYS - f.keys()}"
    assert f["benchmark"] == "run" and f["quick"] is True
    assert f["ingest_reads"] == 300 and f["drain_passings"] == 300 and f["footprint_rows"] == 500
    assert f["recovery_pending"] == 50
    runs = f["ingest_runs"]  # the figure is the median of the bursts it lists
    assert len(runs) == 2 and abs(f["ingest_reads_per_s"] - (runs[0] + runs[1]) / 2) <= 0.1
    for key in RUN_KEYS - {"recovery_s"}:
        assert f[key] > 0, key
    assert f["recovery_s"] >= 0
    assert sorted(f["parser_lines_per_s"]) == formats.names()
    assert f["latency_p50_ms"] <= f["latency_p99_ms"]
    assert isinstance(f["goals_missed"], list)
    assert left == [], "the run left files behind"


def test_profile_ingest_quick_times_the_daemon_without_a_profiler(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "profile_ingest.py"), "--quick"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1].startswith("5000 reads journaled in "), proc.stdout
    assert list(tmp_path.iterdir()) == []  # its daemon's files went with its temporary directory
