"""What every benchmark script shares: the command line, quiet logging, percentiles, peak RSS, the JSON line.

Each script prints a human table, then ONE final line of JSON (figures and ratios) that a CI job or a note
can quote. A ratio always compares two things measured in the same run on the same machine, so it means
something on a Pi as well as on a laptop; the absolute figures only describe the machine they came from.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
from typing import Any

from gateway import log


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a few-second smoke run (figures are rough)")
    return p


def quiet_logs() -> None:
    """Warnings and worse to stderr: the gateway's info lines must not land between the figures on stdout."""
    log.configure(level="warning", stream=sys.stderr, json=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank-interpolated percentile (statistics.quantiles' inclusive method); 0.0 when empty."""
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[max(0, min(98, round(pct) - 1))]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024, 1)


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator > 0 else 0.0


def emit(figures: dict[str, Any]) -> None:
    """The last line of stdout: one JSON object, keys sorted so two runs diff cleanly."""
    print(json.dumps(figures, sort_keys=True), flush=True)
