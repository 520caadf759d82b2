"""The pipeline's progress and the key/value meta: the cursor (last read id derived), the open dedup windows,
and `commit_step`, which stores a step's passings and that progress in ONE transaction, so a restart or a
replay derives exactly the same passings (design.md: the pipeline's progress is itself in the database).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiosqlite

from gateway.store.db import insert_rows, keyed_chunks
from gateway.store.passings import NewPassing, Passings


class _NoSession(Exception):
    """Internal: commit_step found no current session (rolled back)."""


class Progress(Passings):
    """meta (cursor, generation, deviceid...) and the dedup state, written with the passings they produced."""

    async def get_meta(self, key: str) -> str | None:
        rows = await self._fetchall("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    async def set_meta(self, key: str, value: str | None) -> None:
        async with self._write() as db:
            await self._set_meta(db, {key: value})

    @staticmethod
    async def _set_meta(db: aiosqlite.Connection, values: Mapping[str, str | None]) -> None:
        """Inside the caller's transaction; None deletes the key."""
        sets = [(k, v) for k, v in values.items() if v is not None]
        dels = [(k,) for k, v in values.items() if v is None]
        if sets:
            await db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                sets,
            )
        if dels:
            await db.executemany("DELETE FROM meta WHERE key = ?", dels)

    async def dedup_state(self, where: str = "", args: Sequence[Any] = ()) -> dict[tuple[str, str], str]:
        rows = await self._fetchall(f"SELECT reader, key, state FROM dedup {where}", args)
        return {(r["reader"], r["key"]): r["state"] for r in rows}

    async def dedup_state_of(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The stored state of these (reader, key)s, those that have one: a step's keys the pipeline no longer
        holds in memory (store.db.keyed_chunks: one index search each)."""
        found: dict[tuple[str, str], str] = {}
        for with_keys, args in keyed_chunks(list(keys)):
            rows = await self._fetchall(
                f"{with_keys} SELECT dedup.reader, dedup.key, dedup.state "
                "FROM k CROSS JOIN dedup ON dedup.reader = k.r AND dedup.key = k.s",
                args,
            )
            found.update({(r["reader"], r["key"]): r["state"] for r in rows})
        return found

    async def dedup_open(self) -> dict[tuple[str, str], str]:
        """The states with a window still open (pipeline._KeyState.dump writes a "window" key only then): what
        a restarted pipeline must hold in memory, whatever the number of chips it has seen."""
        return await self.dedup_state("""WHERE state LIKE '%"window"%'""")

    async def commit_step(
        self,
        passings: Sequence[NewPassing],
        *,
        meta: Mapping[str, str | None],
        dedup_set: Mapping[tuple[str, str], str] | None = None,
        dedup_delete: Iterable[tuple[str, str]] = (),
    ) -> tuple[str, list[int]] | None:
        """One pipeline step in ONE transaction: store the passings in the current session (allocating their
        num_passings), advance the cursor (meta) and the dedup state. None, and nothing written, when there
        is no current session."""
        try:
            return await self._commit_step(passings, meta, dedup_set, dedup_delete)
        except _NoSession:
            return None

    async def _commit_step(
        self,
        passings: Sequence[NewPassing],
        meta: Mapping[str, str | None],
        dedup_set: Mapping[tuple[str, str], str] | None,
        dedup_delete: Iterable[tuple[str, str]],
    ) -> tuple[str, list[int]]:
        async with self._write() as db:
            token = await self._current_token()
            if token is None:
                raise _NoSession
            nums = await self._insert_passings(db, token, passings)
            await self._set_meta(db, meta)
            if dedup_set:
                await insert_rows(
                    db,
                    "INSERT INTO dedup (reader, key, state) VALUES ",
                    [(r, k, s) for (r, k), s in dedup_set.items()],
                    " ON CONFLICT (reader, key) DO UPDATE SET state = excluded.state",
                )
            dels = list(dedup_delete)
            if dels:
                await db.executemany("DELETE FROM dedup WHERE reader = ? AND key = ?", dels)
        return token, nums
