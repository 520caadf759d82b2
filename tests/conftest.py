"""Project-wide fixtures. Area fixtures live in tests/fixtures/ and are loaded as plugins below."""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator

import pytest

pytest_plugins: list[str] = [
    "tests.chaos.report",  # the closing JSON line of a run with chaos tests (the xdist controller prints it too)
    "tests.fixtures.daemon",
    "tests.fixtures.emulator",
    "tests.fixtures.links",
    "tests.fixtures.tls",  # future_cert: a test CA and a not-yet-valid server certificate
]


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """structlog's configuration is process-global: a test that points it at a buffer must not leave it so."""
    import structlog

    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def _fds() -> set[int]:
    try:
        return {int(x) for x in os.listdir("/proc/self/fd")}
    except FileNotFoundError:  # not Linux: nothing to compare
        return set()


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves a thread or a file descriptor behind (an unclosed db, socket, pty)."""
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    threads_before = {t.ident for t in threading.enumerate()}
    fds_before = _fds()
    yield
    deadline = time.monotonic() + 2.0
    while True:
        gc.collect()
        new_threads = [
            t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive() and not t.daemon
        ]
        new_fds = _fds() - fds_before
        # a couple of lazily opened descriptors (urandom, a cached zoneinfo file) are not a leak
        if not new_threads and len(new_fds) <= 2:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    details = []
    if new_threads:
        details.append(f"threads left running: {[t.name for t in new_threads]}")
    if len(new_fds) > 2:
        targets = []
        for fd in sorted(new_fds):
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        details.append(f"file descriptors left open: {targets}")
    pytest.fail("leak: " + "; ".join(details))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_leaks: skip the thread/fd leak check for this test")
