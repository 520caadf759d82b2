"""Fixtures from tests/fixtures/outbox.py (imported here rather than through the shared pytest_plugins list)."""

from tests.fixtures.outbox import db_path, outbox, session_outbox

__all__ = ["db_path", "outbox", "session_outbox"]
