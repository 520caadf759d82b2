"""The writer connection's durability settings, asked on that very connection (they are per connection)."""

from __future__ import annotations

from gateway.store import Store


async def test_the_writer_connection_is_wal_and_synchronous_full(outbox: Store) -> None:
    # FULL (2): a commit is on the disk when it returns, which is what acknowledging a reader relies on.
    # NORMAL in WAL mode could lose the last commits on power loss.
    assert [tuple(r) for r in await outbox._db.execute_fetchall("PRAGMA synchronous")] == [(2,)]
    assert [tuple(r) for r in await outbox._db.execute_fetchall("PRAGMA journal_mode")] == [("wal",)]
