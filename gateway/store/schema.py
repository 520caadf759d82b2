"""The schema's history: one migration per version, in order, never edited once released.

`PRAGMA user_version` is the file's version; `steps` says what brings a file from its version to this
gateway's, one transaction per step, which `Database` runs when it opens a writable file. A file newer than
SCHEMA_VERSION is refused (db.py): an older gateway must not write a schema it does not know.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# Each entry migrates from user_version == index to index + 1. Never edit a released entry: add one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE reads (
        id          INTEGER PRIMARY KEY,
        link        TEXT NOT NULL,
        reader      TEXT NOT NULL,
        seq         INTEGER,
        reader_ts   TEXT NOT NULL,
        received_at TEXT NOT NULL,
        chip        TEXT,
        bib         TEXT,
        antenna     INTEGER,
        rssi        REAL,
        raw         TEXT NOT NULL DEFAULT '',
        origin      TEXT NOT NULL DEFAULT 'reader' CHECK (origin IN ('reader', 'manual'))
    );
    CREATE UNIQUE INDEX reads_reader_seq ON reads (reader, seq) WHERE seq IS NOT NULL;
    CREATE TABLE rejected_lines (
        id          INTEGER PRIMARY KEY,
        link        TEXT NOT NULL,
        offset      INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        raw         TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE TABLE sessions (
        token_session TEXT PRIMARY KEY,
        alias         TEXT,
        deviceid      TEXT,
        created_by_us INTEGER NOT NULL DEFAULT 0,
        floor         INTEGER NOT NULL DEFAULT 0,
        allocated     INTEGER NOT NULL DEFAULT 0,
        active        INTEGER NOT NULL DEFAULT 0,
        created_at    TEXT NOT NULL,
        closed_at     TEXT
    );
    CREATE TABLE passings (
        id             INTEGER PRIMARY KEY,
        token_session  TEXT NOT NULL,
        num_passing    INTEGER NOT NULL CHECK (num_passing >= 1),
        timestamp      TEXT NOT NULL,
        bib            TEXT NOT NULL,
        chip           TEXT,
        participant_id TEXT,
        timezone       TEXT,
        latitude       REAL,
        longitude      REAL,
        gender         TEXT,
        status         TEXT,
        state          TEXT NOT NULL DEFAULT 'Pending' CHECK (state IN ('Pending', 'Sent', 'Rejected', 'Moved')),
        reason         TEXT,
        attempts       INTEGER NOT NULL DEFAULT 0,
        sent_at        TEXT,
        origin         TEXT NOT NULL DEFAULT 'reader' CHECK (origin IN ('reader', 'manual')),
        read_id        INTEGER REFERENCES reads (id),
        created_at     TEXT NOT NULL,
        UNIQUE (token_session, num_passing)
    );
    CREATE INDEX passings_state ON passings (state, token_session, num_passing);
    CREATE INDEX passings_read ON passings (read_id);
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE dedup (
        reader TEXT NOT NULL,
        key    TEXT NOT NULL,
        state  TEXT NOT NULL,
        PRIMARY KEY (reader, key)
    );
    """,
    # v2: a reader that restarts its numbering (memory wiped, new event file) reuses sequence numbers for NEW
    # reads. (reader, seq) alone cannot be unique then; a re-send is a read whose number AND content match.
    """
    DROP INDEX reads_reader_seq;
    CREATE INDEX reads_reader_seq ON reads (reader, seq) WHERE seq IS NOT NULL;
    """,
    # v3: the database enforces what journal_batch recognises as a re-send, so no other path (a tool, a future
    # bug) can store one read twice. The identity is exactly the app's: reader, sequence number, reader time
    # and chip, where a missing chip (a bib-only read) and an empty one are different values, as in Python.
    # Its (reader, seq) prefix serves the re-send look-up, so the plain v2 index goes.
    """
    DROP INDEX reads_reader_seq;
    CREATE UNIQUE INDEX reads_identity ON reads (reader, seq, reader_ts, chip IS NULL, COALESCE(chip, ''))
        WHERE seq IS NOT NULL;
    """,
    # v4: `Voided` is a state of its own. Until v3 a voided manual passing was `Rejected` with VOID_REASON, so
    # every query about the cloud's refusals had to exclude the operator's voids by that magic string. SQLite
    # cannot change a CHECK in place: the table is rebuilt (same columns, same ids, same indexes) and the old
    # voids are converted on the way. Nothing references passings, so the foreign keys are untouched.
    """
    CREATE TABLE passings_v4 (
        id             INTEGER PRIMARY KEY,
        token_session  TEXT NOT NULL,
        num_passing    INTEGER NOT NULL CHECK (num_passing >= 1),
        timestamp      TEXT NOT NULL,
        bib            TEXT NOT NULL,
        chip           TEXT,
        participant_id TEXT,
        timezone       TEXT,
        latitude       REAL,
        longitude      REAL,
        gender         TEXT,
        status         TEXT,
        state          TEXT NOT NULL DEFAULT 'Pending'
                       CHECK (state IN ('Pending', 'Sent', 'Rejected', 'Moved', 'Voided')),
        reason         TEXT,
        attempts       INTEGER NOT NULL DEFAULT 0,
        sent_at        TEXT,
        origin         TEXT NOT NULL DEFAULT 'reader' CHECK (origin IN ('reader', 'manual')),
        read_id        INTEGER REFERENCES reads (id),
        created_at     TEXT NOT NULL,
        UNIQUE (token_session, num_passing)
    );
    INSERT INTO passings_v4
        SELECT id, token_session, num_passing, timestamp, bib, chip, participant_id, timezone, latitude,
               longitude, gender, status,
               CASE WHEN state = 'Rejected' AND origin = 'manual' AND reason = 'voided by operator'
                    THEN 'Voided' ELSE state END,
               reason, attempts, sent_at, origin, read_id, created_at
        FROM passings ORDER BY id;
    DROP TABLE passings;
    ALTER TABLE passings_v4 RENAME TO passings;
    CREATE INDEX passings_state ON passings (state, token_session, num_passing);
    CREATE INDEX passings_read ON passings (read_id);
    """,
    # v5: a reader in first/last-seen mode (IPICO) says which of the two each read is; the journal keeps it so
    # the pipeline can keep only one of them (`[reader] ipico_seen`), on replay too. Older reads have none.
    """
    ALTER TABLE reads ADD COLUMN seen TEXT CHECK (seen IN ('first', 'last', 'both'));
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Step:
    """One migration as separate statements: executescript would COMMIT on its own, so the statements run one
    by one inside the opener's transaction, the version bump last, so a step is applied whole or not at all."""

    from_version: int
    statements: tuple[str, ...]

    @property
    def to_version(self) -> int:
        return self.from_version + 1


def steps(version: int) -> Iterator[Step]:
    """The steps from a file at `version` up to SCHEMA_VERSION (none when it is current)."""
    for index in range(version, SCHEMA_VERSION):
        statements = tuple(s for s in MIGRATIONS[index].split(";") if s.strip())
        yield Step(index, (*statements, f"PRAGMA user_version = {index + 1}"))
