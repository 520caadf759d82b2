"""Which device and which session the gateway numbers and uploads passings for.

`deviceid`: from the config, else stored in the database, else bound (`POST /devices`) when a serial number
and a model are configured. `token_session`: from the config, else the stored current one, else created
(`POST /sessions`). A session the gateway did not create empty (a configured token, a database that was
lost) is adopted only after asking the cloud for its highest num_passing, which becomes the floor local
numbering continues above (invariant 2).

The cloud may be unreachable when the gateway starts (a race start on a flaky 4G link): every call here is
retried forever with capped full-jitter backoff, in the service's own task, so reads keep being journaled
meanwhile. A wrong key is waited out the same way; pass a callable returning the current client so that a
SIGHUP with a fixed key reaches a lifecycle that is still waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.backoff import Backoff, Streak
from gateway.cloud.client import RufusClient
from gateway.cloud.models import DeviceBind, SessionCreate, SessionInfo
from gateway.config import DEFAULT_DEVICE_TYPE, Settings
from gateway.errors import AuthError, BadRequestError, GatewayError, NotFoundError, RetryableError
from gateway.log import get_logger
from gateway.store import SessionRecord, Store

log = get_logger("gateway.lifecycle")

T = TypeVar("T")
ClientSource = RufusClient | Callable[[], RufusClient]

DEVICE_META_KEY = "deviceid"  # the crew CLI reads the stored deviceid under this key too

# What a key that may not read (a WRITE-only key: 403 on every GET) leaves unchecked. Listed once, at start.
READ_CHECKS = (
    "duplicate read-back: a duplicate reported for a passing never acknowledged cannot be compared with the "
    "cloud's copy, so a num_passing someone else used goes unnoticed",
    "session adoption floor: the highest num_passing of a configured or lost session cannot be asked, so "
    "numbering may collide with passings already in it",
    "closed-session read-back and follow_active_session: what a closed session already holds cannot be read, "
    "nor the device's active session found",
    "reconcile: the session cannot be read back to prove every passing is in the cloud",
)


def read_denied(client: RufusClient, where: str) -> None:
    """Record on the client that its key may not read; log the one warning listing what is no longer checked
    (once per client, so once per key: a reload with a new key builds a new client, which starts trusted)."""
    if not client.read_access.deny(where):
        return
    log.warning(
        "API key may not read (403 on a GET): uploading continues, these safety checks are off; use a READ_WRITE key",
        refused=where,
        checks_off=list(READ_CHECKS),
    )


def can_read(client: RufusClient) -> bool:
    return client.read_access.allowed


@dataclass(frozen=True)
class LifecycleSettings:
    deviceid: str | None = None
    serial_number: str | None = None
    model: str | None = None
    device_alias: str | None = None
    firmware: str | None = None
    device_type: str = DEFAULT_DEVICE_TYPE  # always sent on bind (one vendor page requires it)
    token_session: str | None = None
    session_alias: str | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    # The daemon waits out outages, a wrong key and refusals (reads keep being journaled meanwhile); a crew
    # command at the keyboard wants the error at once: patient=False raises on the first failure.
    patient: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, *, patient: bool = True) -> LifecycleSettings:
        return cls(
            patient=patient,
            deviceid=settings.device.deviceid,
            serial_number=settings.device.serial_number,
            model=settings.device.model,
            device_alias=settings.device.alias,
            firmware=settings.device.firmware,
            device_type=settings.device.type,
            token_session=settings.session.token_session,
            session_alias=settings.session.alias,
            backoff_cap=settings.cloud.backoff_cap_s,
        )


def _current(client: ClientSource) -> RufusClient:
    if isinstance(client, RufusClient):
        return client
    return client()


class _ReadRefused(GatewayError):
    """A GET answered 403: the key may write but not read."""


async def _call(
    what: str,
    client: ClientSource,
    fn: Callable[[RufusClient], Awaitable[T]],
    settings: LifecycleSettings,
    *,
    read: bool = False,
) -> T:
    """Call the cloud until it answers. Outages, a wrong key and a refused request are waited out (a warning
    at the start of the streak, quiet after, the recovery logged); a 404 goes to the caller, as does a 403 on
    a read. Not patient: every error goes to the caller at once."""
    backoff = Backoff(settings.backoff_base, settings.backoff_cap)
    streak = Streak(f"cloud {what}", log)
    while True:
        c = _current(client)
        retry_after: float | None = None
        try:
            result = await fn(c)
        except RetryableError as exc:
            if not settings.patient:
                raise
            streak.failed(str(exc), status=exc.status)
            retry_after = exc.retry_after
        except AuthError as exc:
            if read and exc.status == 403:
                read_denied(c, what)
                raise _ReadRefused(what) from None
            if not settings.patient:
                raise
            # Unknown key (401) or one that may not write: nothing to do but wait for a reload.
            streak.failed(f"{exc} (fix the API key; SIGHUP reloads it)", status=exc.status)
        except BadRequestError as exc:
            if not settings.patient:
                raise
            # A refused bind or session (a bad [device] value): crashing would stop the readers too.
            if not streak.down:
                log.error(f"cloud refused {what}: check the [device]/[session] settings", error=str(exc))
            streak.failed(str(exc), status=exc.status)
            await asyncio.sleep(settings.backoff_cap)
            continue
        else:
            streak.succeeded()
            return result
        await asyncio.sleep(backoff.next_delay(retry_after))


async def resolve_device(outbox: Store, client: ClientSource, settings: LifecycleSettings) -> str | None:
    """The deviceid sessions are created for; None when none is configured, stored or bindable."""
    stored = await outbox.get_meta(DEVICE_META_KEY)
    if settings.deviceid:
        if stored != settings.deviceid:
            if stored:
                log.warning(
                    "configured deviceid differs from the stored one: using the configured one",
                    configured=settings.deviceid,
                    stored=stored,
                )
            await outbox.set_meta(DEVICE_META_KEY, settings.deviceid)
        return settings.deviceid
    if stored:
        return stored
    if not (settings.serial_number and settings.model):
        log.info("no device: set [device] deviceid, or serial_number and model to bind one")
        return None
    model, serial = settings.model, settings.serial_number
    request = DeviceBind(
        model, serial, alias=settings.device_alias, firmware=settings.firmware, type=settings.device_type
    )
    bound = await _call("bind device", client, lambda c: c.bind_device(request), settings)
    deviceid = bound.deviceid
    await outbox.set_meta(DEVICE_META_KEY, deviceid)
    log.info("device bound", deviceid=deviceid, serial_number=serial, model=model, type=settings.device_type)
    return deviceid


async def _cloud_floor(client: ClientSource, token: str, settings: LifecycleSettings) -> tuple[int, str | None]:
    """The adopted session's highest num_passing and alias, asked before a single passing is numbered in it.
    A session the cloud does not know is waited on (an error at the start, quiet after): numbering into it
    blindly could only produce passings nobody can upload."""
    backoff = Backoff(settings.backoff_base, settings.backoff_cap)
    streak = Streak("adopt configured session", log)
    while True:
        try:
            info = await _call("session info", client, lambda c: c.session_info(token), settings, read=True)
            floor = await _call("highest num_passing", client, lambda c: c.max_num_passing(token), settings, read=True)
        except _ReadRefused:
            log.error(
                "adopting a session without knowing its highest num_passing (the key may not read): numbering "
                "continues above the local one and may collide with passings already in the cloud",
                token_session=token,
            )
            return 0, None
        except NotFoundError as exc:
            if not settings.patient:
                raise
            if not streak.down:
                log.error(
                    "configured session not found in the cloud; check [session] token_session",
                    token_session=token,
                    error=str(exc),
                )
            streak.failed(str(exc))
            await asyncio.sleep(backoff.next_delay())
            continue
        streak.succeeded()
        return max(floor, 0), info.alias


async def resolve_session(outbox: Store, client: ClientSource, settings: LifecycleSettings) -> SessionRecord | None:
    """The session new passings are numbered in: configured, else stored, else created. None when there is
    no session and no device to create one for (reads are still journaled)."""
    current = await outbox.current_session()
    token = settings.token_session
    if token:
        if current is not None and current.token_session == token:
            await _probe_read(client, token)
            return current
        stored = next((s for s in await outbox.sessions() if s.token_session == token), None)
        deviceid = await resolve_device(outbox, client, settings)
        floor, alias = await _cloud_floor(client, token, settings)
        if stored is not None:
            floor = max(floor, stored.floor)
        await outbox.set_current_session(
            token,
            alias=alias or settings.session_alias,
            deviceid=(stored.deviceid if stored else None) or deviceid,
            created_by_us=stored.created_by_us if stored else False,
            floor=floor,
        )
        log.info(
            "session adopted: numbering continues above the cloud's highest num_passing",
            token_session=token,
            cloud_highest=floor,
        )
        return await outbox.current_session()
    if current is not None:
        await _probe_read(client, current.token_session)
        return current
    deviceid = await resolve_device(outbox, client, settings)
    if deviceid is None:
        log.warning(
            "no session: configure [session] token_session, or a device to create one for; "
            "reads are journaled but nothing is numbered or uploaded"
        )
        return None
    alias = settings.session_alias
    token, deviceid = await _create_session(outbox, client, deviceid, settings)
    # Created by us, so empty: numbering starts at 1 with no need to ask.
    await outbox.set_current_session(token, alias=alias, deviceid=deviceid, created_by_us=True, floor=0)
    log.info("session created", token_session=token, alias=alias, deviceid=deviceid)
    await _probe_read(client, token)
    return await outbox.current_session()


def _listing(deviceid: str) -> Callable[[RufusClient], Awaitable[list[SessionInfo]]]:
    return lambda c: c.device_sessions(deviceid)


def _creating(deviceid: str, alias: str | None, before: set[str] | None) -> Callable[[RufusClient], Awaitable[str]]:
    """One POST /sessions. Creating is not idempotent: when the answer is lost (a dropped connection after
    the cloud committed), the device's sessions are listed again and a new active one is ours, adopted
    rather than created twice."""

    async def attempt(c: RufusClient) -> str:
        try:
            return (await c.create_session(SessionCreate(deviceid, alias))).token_session
        except RetryableError:
            if before is None:
                raise
            try:
                now = await c.device_sessions(deviceid)
            except GatewayError:
                now = []
            fresh = [x.token_session for x in now if x.active and x.token_session not in before]
            if len(fresh) != 1:
                raise
            log.info("session created, its answer lost on the way: using it", token_session=fresh[0])
            return fresh[0]

    return attempt


async def _create_session(
    outbox: Store, client: ClientSource, deviceid: str, settings: LifecycleSettings
) -> tuple[str, str]:
    """POST /sessions for our device. A device the cloud no longer knows (unbound, or a cloud that lost its
    data) is bound again when it can be, else waited on: crashing would stop the readers too."""
    alias = settings.session_alias
    backoff = Backoff(settings.backoff_base, settings.backoff_cap)
    while True:
        try:
            before: set[str] | None
            try:
                known = await _call("device sessions", client, _listing(deviceid), settings, read=True)
                before = {x.token_session for x in known}
            except _ReadRefused:
                before = None  # cannot tell a lost answer from a refusal: a retry may leave an empty session
            token = await _call("create session", client, _creating(deviceid, alias, before), settings)
            return token, deviceid
        except NotFoundError as exc:
            if not settings.patient:
                raise
            rebind = not settings.deviceid and settings.serial_number and settings.model
            log.error(
                "the cloud does not know our device" + ("; binding it again" if rebind else ""),
                deviceid=deviceid,
                error=str(exc),
            )
            if rebind:
                await outbox.set_meta(DEVICE_META_KEY, None)
                deviceid = await resolve_device(outbox, client, settings) or deviceid
            await asyncio.sleep(backoff.next_delay())


async def _probe_read(client: ClientSource, token: str) -> bool:
    """One GET at start so that a WRITE-only key is reported up front, not at the first failed check. One
    attempt only: an unreachable cloud or a wrong key must not hold the uploader back (it retries and
    alerts on its own)."""
    c = _current(client)
    try:
        await c.session_info(token)
    except AuthError as exc:
        if exc.status == 403:
            read_denied(c, "session info")
            return False
    except GatewayError:
        pass
    return True


async def new_session(outbox: Store, client: RufusClient, alias: str | None, deviceid: str | None) -> SessionRecord:
    """`session new`: create a session in the cloud (the cloud closes the device's other one) and number new
    passings in it. One attempt: the crew is at the keyboard and sees the error."""
    if not deviceid:
        raise GatewayError("no deviceid: set [device] deviceid, or serial_number and model and run `device bind`")
    previous = await outbox.current_session()
    token = (await client.create_session(SessionCreate(deviceid, alias))).token_session
    await outbox.set_current_session(token, alias=alias, deviceid=deviceid, created_by_us=True, floor=0)
    record = await outbox.current_session()
    assert record is not None
    fields: dict[str, Any] = {"token_session": token, "alias": alias}
    if previous is not None and previous.token_session != token:
        fields["previous"] = previous.token_session
        left = len(await outbox.pending(previous.token_session, 1_000_000))
        if left:
            # The cloud has just closed the previous session: the uploader reads back what it holds and
            # moves or holds the rest (follow_active_session), it never drops them.
            log.warning("previous session still has pending passings", pending=left, **fields)
    log.info("new session", **fields)
    return record


async def close_session(outbox: Store, client: RufusClient, token_session: str) -> None:
    """`session close`: the cloud keeps the session readable but takes no more passings into it."""
    await client.close_session(token_session)
    left = len(await outbox.pending(token_session, 1_000_000))
    log.info("session closed", token_session=token_session, pending=left)
    if left:
        log.warning(
            "closed session still has pending passings: they are held (or moved with "
            "follow_active_session) by the uploader",
            token_session=token_session,
            pending=left,
        )


async def follow_active(
    outbox: Store, client: RufusClient, closed_token: str, deviceid: str
) -> tuple[str, dict[int, int]] | None:
    """Move the Pending passings of a closed session to the device's active one, with fresh numbers above
    the active session's highest, in one transaction. Returns (active token, old->new numbers), or None
    when the device has no other active session. Raises AuthError (403) when the key may not read."""
    active = await client.active_session(deviceid)
    if active is None or active.token_session == closed_token:
        return None
    target = active.token_session
    floor = await client.max_num_passing(target)
    moved = await outbox.renumber(closed_token, None, to_session=target, floor=floor)
    current = await outbox.current_session()
    if current is None or current.token_session == closed_token:
        await outbox.set_current_session(
            target, alias=active.alias, deviceid=deviceid, created_by_us=False, floor=floor
        )
        # Passings numbered in the closed session between the move and the switch follow the others.
        moved.update(await outbox.renumber(closed_token, None, to_session=target, floor=floor))
    return target, moved
