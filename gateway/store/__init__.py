"""The gateway's one SQLite file: the journal of every raw read, the outbox of passings, sessions, meta.

One `Store` per open file, made of the parts below. Each part is a subclass of `db.Database`, so they all
work on the same connection under the same lock: a transaction one method opens (a pipeline step writes
passings, a session's high-water mark, the cursor and the dedup state) is one transaction across modules.

  db.py        connection, pragmas, the lock file, BEGIN IMMEDIATE transactions, close
  schema.py    the schema's versions: MIGRATIONS, each run once, in order, when a file is opened
  journal.py   raw reads and rejected lines in (re-sends recognised), read back in id order
  sessions.py  the current session and num_passing allocation (invariant 2)
  passings.py  the outbox proper: passings and their states
  progress.py  meta, the pipeline's dedup state, and commit_step (a pipeline step as one transaction)
  admin.py     stats, explicit retention (prune_sent), integrity check, export
  writer.py    JournalWriter: group commit in front of the journal (not part of Store: it runs as a task)

Nothing here deletes data except `prune_sent`, which the operator asks for explicitly (invariant 5).
"""

from __future__ import annotations

from gateway.store.admin import Admin, OutboxStats
from gateway.store.journal import ORIGINS, Journal, JournaledRead
from gateway.store.passings import STATES, VOID_REASON, NewPassing, OutboxRow, VoidRefused
from gateway.store.progress import Progress
from gateway.store.schema import MIGRATIONS, SCHEMA_VERSION
from gateway.store.sessions import SessionRecord
from gateway.store.writer import JournalWriter


class Store(Journal, Progress, Admin):
    """The store. Create with `await Store.open(path)`; every method is a coroutine, each write one transaction."""


__all__ = [
    "MIGRATIONS",
    "ORIGINS",
    "SCHEMA_VERSION",
    "STATES",
    "VOID_REASON",
    "JournalWriter",
    "JournaledRead",
    "NewPassing",
    "OutboxRow",
    "OutboxStats",
    "SessionRecord",
    "Store",
    "VoidRefused",
]
