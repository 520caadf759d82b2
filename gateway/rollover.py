"""A session the cloud closed while passings of ours still wait for it: what it already holds is Sent, the rest
is moved to the device's active session (follow_active_session) or held until the crew acts. Never dropped.

Beside `lifecycle`, which decides which session new passings are numbered in; this decides what becomes of
the passings a closed one is left with, as the uploader meets the closure (a 404 "Session not found or
closed" on an upload).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway import lifecycle
from gateway.aio import uncancellable
from gateway.log import get_logger
from gateway.store import SessionRecord
from gateway.uplink import Uplink
from gateway.verification import Verifier

log = get_logger("gateway.uploader")

ALL = 1_000_000_000  # "every pending row": a closed session's rows are handled all at once


@dataclass(frozen=True)
class _Hold:
    until: float  # time.monotonic() to look again; inf: until the crew acts (or a restart)
    current: str | None  # the current session when held: a new one is worth looking again at once


class Rollover:
    def __init__(
        self, uplink: Uplink, verifier: Verifier, *, follow_active_session: bool, deviceid: str | None
    ) -> None:
        self._uplink = uplink
        self._verifier = verifier
        self._follow = follow_active_session
        self._deviceid = deviceid  # configured; else the session's or the stored one
        self._held: dict[str, _Hold] = {}

    def waits(self, token: str, current_token: str | None, now: float) -> bool:
        """Whether a held session is left alone at `now`: until its time to look again, unless the crew opened
        a new current session meanwhile (then its passings may move at once)."""
        hold = self._held.get(token)
        if hold is None or hold.until <= now:
            return False
        return hold.until == float("inf") or hold.current == current_token

    def holds(self, token: str) -> bool:
        return token in self._held

    def follow(self, on: bool) -> None:
        """[session] follow_active_session changed (a reload). Turned on, the sessions held because following
        was off are looked at again now, so their passings move."""
        turned_on, self._follow = on and not self._follow, on
        if turned_on and self._held:
            log.info("follow_active_session on: retrying held sessions", sessions=sorted(self._held))
            self._held.clear()
            self._uplink.status.held_sessions = []

    async def session_closed(self, rec: SessionRecord) -> None:
        """The cloud takes no more passings into this session. What it already holds is Sent; the rest is
        moved to the device's active session (follow_active_session) or held. Never dropped."""
        up = self._uplink
        token = rec.token_session
        pending = await up.outbox.pending(token, ALL)
        if not pending:
            return
        landed: list[int] = []
        if up.can_read:
            landed = await self._verifier.held(token, pending, "closed-session read-back")
            if landed:
                await uncancellable(up.mark_sent(token, landed))
                log.info(
                    "closed session already holds some pending passings: marked Sent",
                    token_session=token,
                    count=len(landed),
                )
        left = len(pending) - len(landed)
        if left <= 0:
            return
        if not self._follow:
            self._hold(
                token,
                _Hold(float("inf"), None),
                f"session {token} was closed in the cloud: {left} passings held (not dropped); start a new "
                "session or set follow_active_session to move them",
            )
            return
        deviceid = self._deviceid or rec.deviceid or await up.outbox.get_meta(lifecycle.DEVICE_META_KEY)
        moved: tuple[str, dict[int, int]] | None = None
        if deviceid and up.can_read:
            moved, _ = await up.read_back(
                token, lambda c: lifecycle.follow_active(up.outbox, c, token, deviceid), "active session look-up"
            )
        if moved is None:
            # No other active session yet (or no way to find it): look again later, keep everything.
            current = await up.outbox.current_session()
            self._hold(
                token,
                _Hold(time.monotonic() + up.backoff_cap, current.token_session if current else None),
                f"session {token} was closed in the cloud and the device has no other active session: "
                f"{left} passings held until one exists",
            )
            return
        target, mapping = moved
        self._held.pop(token, None)
        up.status.held_sessions = sorted(self._held)
        up.status.renumbered += len(mapping)
        nums = sorted(mapping.values())
        span = f"{nums[0]}..{nums[-1]}" if nums else "-"
        up.alert(
            f"session {token} was closed in the cloud: {len(mapping)} pending passings moved to the "
            f"device's active session {target} as num_passing {span}"
        )

    def _hold(self, token: str, hold: _Hold, message: str) -> None:
        first = token not in self._held
        self._held[token] = hold
        self._uplink.status.held_sessions = sorted(self._held)
        if first:
            self._uplink.alert(message)
