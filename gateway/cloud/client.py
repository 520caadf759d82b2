"""The RUFUS Cloud Public API v0 client: typed calls in, typed values out, typed errors.

One aiohttp session per client (keep-alive to the one host), TLS verification always on, explicit
timeouts. Both response dialects are read without being told which: a body that is exactly
`{"body": ...}` is the enveloped one. Only the schema's keys are ever sent. The API key travels in a
header and nowhere else: it is registered with the log scrubber and left out of every message and repr.
"""

from __future__ import annotations

import json
import math
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, TypeVar

import aiohttp

from gateway.cloud.models import (
    Bound,
    Closed,
    CloudPassing,
    Device,
    DeviceBind,
    InsertResult,
    ResponseShapeError,
    SessionCreate,
    SessionCreated,
    SessionInfo,
    Unbound,
    device_from,
    opt_int,
    passing_from,
    session_from,
)
from gateway.errors import (
    AuthError,
    BadRequestError,
    CloudError,
    NotFoundError,
    PayloadTooLargeError,
    RetryableError,
    SessionClosedError,
)
from gateway.log import get_logger, redact, register_secret
from gateway.model import Passing, format_ts

T = TypeVar("T")
PAGE_SIZE = 5000  # the cloud's page size for passings and its maximum `limit` for devices
_RETRYABLE_STATUS = {408, 425, 429}
_log = get_logger("gateway.cloud")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 30.0
    total: float = 60.0


def passing_payload(p: Passing) -> dict[str, Any]:
    """One `passings_list` item: the schema's keys only; optional ones are omitted when unknown."""
    item: dict[str, Any] = {"timestamp": format_ts(p.timestamp), "num_passing": int(p.num_passing), "bib": str(p.bib)}
    for key in ("chip", "participant_id", "status", "timezone", "gender"):
        value = getattr(p, key)
        if value is not None:
            item[key] = str(value)
    for key in ("latitude", "longitude"):
        value = getattr(p, key)
        # NaN/inf would serialise as bare NaN, which is not JSON: an unusable coordinate is an unknown one
        if value is not None and math.isfinite(value):
            item[key] = float(value)
    return item


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date; None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _unwrap(payload: Any) -> Any:
    # The enveloped dialect wraps every answer, success or error, in exactly one key.
    if isinstance(payload, dict) and set(payload) == {"body"}:
        return payload["body"]
    return payload


def _description(payload: Any) -> str | None:
    if isinstance(payload, dict):
        desc = payload.get("description")
        return None if desc is None else str(desc)
    if isinstance(payload, str):
        return payload
    return None


def _one(result: Any, what: str) -> Any:
    # Device info is documented as an object and session look-ups as "an array of one": accept either.
    if isinstance(result, list):
        if not result:
            raise NotFoundError(f"{what}: empty result", status=404)
        return result[0]
    return result


class ReadAccess:
    """Whether this client's API key may read (GET) what it writes: one per client, so a reload with a new key,
    which builds a new client, starts trusted again, and the refusal is remembered (and reported) once per key."""

    def __init__(self) -> None:
        self.refused: str | None = None  # the first check a 403 on a GET turned off

    @property
    def allowed(self) -> bool:
        return self.refused is None

    def deny(self, where: str) -> bool:
        """Record a refused read; True only the first time, so the caller warns once."""
        if self.refused is not None:
            return False
        self.refused = where
        return True


class RufusClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        key_header: str = "api_key",
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        register_secret(api_key)
        self.base_url = base_url.rstrip("/")
        self.key_header = key_header
        self.timeouts = timeouts
        self._api_key = api_key
        self._session: aiohttp.ClientSession | None = None
        self.read_access = ReadAccess()
        # plain counters a status page can read
        self.requests = 0
        self.failures = 0
        self.last_status: int | None = None

    def __repr__(self) -> str:
        return f"RufusClient(base_url={self.base_url!r}, key_header={self.key_header!r})"

    async def __aenter__(self) -> RufusClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily so the session binds to the loop that actually runs the calls.
        if self._session is None or self._session.closed:
            t = self.timeouts
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(), limit=4, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(
                    total=t.total, connect=t.connect, sock_connect=t.connect, sock_read=t.read
                ),
                headers={"Accept": "application/json"},
                raise_for_status=False,
            )
        return self._session

    # -- transport and error mapping -------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: dict[str, Any] | None = None,
        op: str,
    ) -> Any:
        """One request; returns the unwrapped success object or raises a CloudError subclass."""
        self.requests += 1
        try:
            return await self._exchange(method, path, params=params, body=body, op=op)
        except CloudError as exc:
            self.failures += 1
            _log.debug("cloud_request_failed", op=op, method=method, path=path, status=exc.status, error=str(exc))
            raise

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None,
        body: dict[str, Any] | None,
        op: str,
    ) -> Any:
        headers = {self.key_header: self._api_key}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        url = self.base_url + path
        try:
            # Redirects are not followed: aiohttp would carry our api_key header to wherever the Location
            # points (a captive portal, another host). The real API does not redirect.
            async with self._http().request(
                method, url, params=params, data=data, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                self.last_status = status
                raw = await resp.read()
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                location = resp.headers.get("Location", "?")
        except aiohttp.ClientSSLError as exc:
            text = redact(str(exc))
            suspect = "not yet valid" in text.lower()
            hint = " (is this machine's clock in the past?)" if suspect else ""
            raise RetryableError(f"{op}: TLS failure: {text}{hint}", clock_suspect=suspect) from None
        except aiohttp.InvalidURL:
            # a configuration mistake, not an outage: retrying cannot fix it
            raise CloudError(f"{op}: invalid URL {redact(url)!r} (check [cloud] base_url)") from None
        except TimeoutError as exc:
            raise RetryableError(f"{op}: {self._which_timeout(exc)}") from None
        except aiohttp.ClientError as exc:
            raise RetryableError(f"{op}: connection failed: {type(exc).__name__}: {redact(str(exc))}") from None
        except OSError as exc:
            raise RetryableError(f"{op}: connection failed: {redact(str(exc))}") from None

        payload: Any = None
        parsed = False
        if raw:
            try:
                payload = json.loads(raw)
                parsed = True
            except (UnicodeDecodeError, json.JSONDecodeError):
                parsed = False
        payload = _unwrap(payload)
        if 200 <= status < 300:
            if status == 204 and not raw:
                return None  # "no content" is an answer, not a garbled one
            if not parsed:
                raise RetryableError(f"{op}: HTTP {status} with a body that is not JSON", status=status)
            return payload
        desc = _description(payload) if parsed else None
        desc = None if desc is None else redact(desc)
        where = f"{op}: HTTP {status}" + (f": {desc}" if desc else "")
        if 300 <= status < 400:
            where = f"{op}: HTTP {status} redirect to {redact(location)!r} not followed (a captive portal?)"
            raise RetryableError(where, status=status, retry_after=retry_after)
        if status in (401, 403):
            raise AuthError(where, status=status, description=desc)
        if status == 404:
            if desc and "not found or closed" in desc.lower():
                raise SessionClosedError(where, status=status, description=desc)
            raise NotFoundError(where, status=status, description=desc)
        if status == 413:
            raise PayloadTooLargeError(where, status=status, description=desc)
        if status in _RETRYABLE_STATUS or status >= 500:
            raise RetryableError(where, status=status, description=desc, retry_after=retry_after)
        if status == 400:
            raise BadRequestError(where, status=status, description=desc)
        raise CloudError(where, status=status, description=desc)

    def _which_timeout(self, exc: TimeoutError) -> str:
        # Which limit ran out tells an operator where to look: no handshake (link down, host gone), a stalled
        # answer (a hung server or proxy), or an answer too slow overall (a trickling link).
        t = self.timeouts
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return f"connect timed out (no connection within {t.connect:g} s)"
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return f"read timed out (nothing received for {t.read:g} s)"
        return f"timed out (no complete answer within the total {t.total:g} s)"

    async def _result(self, method: str, path: str, *, op: str, **kw: Any) -> Any:
        payload = await self._call(method, path, op=op, **kw)
        if not isinstance(payload, dict):
            raise RetryableError(f"{op}: unexpected response shape ({type(payload).__name__})")
        return payload

    @staticmethod
    def _field(payload: dict[str, Any], key: str, op: str) -> Any:
        value = payload.get(key)
        if value is None:
            raise RetryableError(f"{op}: response lacks {key!r}")
        return value

    # -- devices ---------------------------------------------------------------------------------------

    async def bind_device(self, request: DeviceBind) -> Bound:
        body: dict[str, Any] = {"model": request.model, "serial_number": request.serial_number}
        for key in ("alias", "firmware", "type"):
            value = getattr(request, key)
            if value is not None:
                body[key] = value
        payload = await self._result("POST", "/devices", body=body, op="bind device")
        return Bound(str(self._field(payload, "deviceid", "bind device")), _description(payload))

    async def unbind_device(self, deviceid: str) -> Unbound:
        payload = await self._call("DELETE", f"/devices/{deviceid}", op="unbind device")
        # The 2xx is what counts; the echoed id and description are informative only.
        echoed = payload.get("deviceid") if isinstance(payload, dict) else None
        return Unbound(str(echoed or deviceid), _description(payload))

    async def list_devices(self) -> list[Device]:
        devices: list[Device] = []
        page = 1
        while True:
            try:
                payload = await self._result(
                    "GET", "/devices", params={"page": page, "limit": PAGE_SIZE}, op="list devices"
                )
            except NotFoundError as exc:
                # A company with no devices (or a page past the end) is not documented. By the wording of
                # "Sessions not found" and "Passings not found" the vendor would answer 404 "Devices not found"
                # (or "Device not found": this path names no device, so it can only mean none): that is an
                # empty list. Any other 404 (a bare "Not Found") means base_url does not point at the API,
                # and an empty list would hide that misconfiguration, so it raises.
                if _is_empty_404(exc, "devices not found") or _is_empty_404(exc, "device not found"):
                    return devices
                raise
            result = payload.get("result") or []
            if not isinstance(result, list):
                raise RetryableError("list devices: result is not a list")
            devices.extend(self._parse(device_from, item, "list devices") for item in result)
            pagination = payload.get("pagination")
            if isinstance(pagination, dict) and "has_more" in pagination:
                more = bool(pagination["has_more"])
            else:
                more = len(result) >= PAGE_SIZE
            if not more or not result:
                return devices
            page += 1

    async def device_info(self, deviceid: str) -> Device:
        payload = await self._result("GET", f"/devices/{deviceid}", op="device info")
        return self._parse(device_from, _one(payload.get("result"), "device info"), "device info")

    # -- sessions --------------------------------------------------------------------------------------

    async def create_session(self, request: SessionCreate) -> SessionCreated:
        body: dict[str, Any] = {"deviceid": request.deviceid}
        if request.alias is not None:
            body["alias"] = request.alias
        payload = await self._result("POST", "/sessions", body=body, op="create session")
        return SessionCreated(str(self._field(payload, "token_session", "create session")), _description(payload))

    async def close_session(self, token_session: str) -> Closed:
        payload = await self._call("PATCH", f"/sessions/close/{token_session}", op="close session")
        echoed = payload.get("token_session") if isinstance(payload, dict) else None
        return Closed(str(echoed or token_session), _description(payload))

    async def device_sessions(self, deviceid: str) -> list[SessionInfo]:
        try:
            payload = await self._result("GET", f"/sessions/device/{deviceid}", op="device sessions")
        except NotFoundError as exc:
            if _is_empty_404(exc, "sessions not found"):
                return []
            raise
        return [self._parse(session_from, s, "device sessions") for s in _as_list(payload.get("result"))]

    async def active_session(self, deviceid: str) -> SessionInfo | None:
        try:
            payload = await self._result("GET", f"/sessions/device/{deviceid}/active", op="active session")
        except NotFoundError as exc:
            if _is_empty_404(exc, "sessions not found"):
                return None
            raise
        sessions = [self._parse(session_from, s, "active session") for s in _as_list(payload.get("result"))]
        active = [s for s in sessions if s.active] or sessions
        return active[0] if active else None

    async def session_info(self, token_session: str) -> SessionInfo:
        payload = await self._result("GET", f"/sessions/{token_session}", op="session info")
        return self._parse(session_from, _one(payload.get("result"), "session info"), "session info")

    # -- passings --------------------------------------------------------------------------------------

    async def insert_passings(self, token_session: str, passings: Sequence[Passing]) -> InsertResult:
        body = {"token_session": token_session, "passings_list": [passing_payload(p) for p in passings]}
        payload = await self._result("POST", "/passings", body=body, op="insert passings")
        inserted = opt_int(payload.get("inserted_count"))
        duplicate = opt_int(payload.get("duplicate_count"))
        if inserted is None or duplicate is None:
            # The 2xx means the batch is stored; without counts assume none were duplicates, and say so.
            _log.warning("insert_passings_counts_missing", token_session=token_session, sent=len(passings))
            duplicate = duplicate or 0
            inserted = len(passings) - duplicate if inserted is None else inserted
        return InsertResult(inserted_count=inserted, duplicate_count=duplicate)

    async def _paged_passings(self, path: str, params: dict[str, str | int], op: str) -> list[CloudPassing]:
        out: list[CloudPassing] = []
        page = 1
        while True:
            try:
                payload = await self._result("GET", path, params={**params, "page": page}, op=op)
            except NotFoundError as exc:
                if _is_empty_404(exc, "passings not found"):
                    return out
                raise
            result = _as_list(payload.get("result"))
            out.extend(self._parse(passing_from, item, op) for item in result)
            if len(result) < PAGE_SIZE:
                return out
            page += 1

    async def session_passings(
        self, token_session: str, first: int | None = None, last: int | None = None
    ) -> list[CloudPassing]:
        params: dict[str, str | int] = {}
        if first is not None:
            params["first"] = first
        if last is not None:
            params["last"] = last
        return await self._paged_passings(f"/passings/session/{token_session}", params, "session passings")

    async def device_passings(
        self, deviceid: str, start: datetime | None = None, end: datetime | None = None
    ) -> list[CloudPassing]:
        params: dict[str, str | int] = {}
        if start is not None:
            params["from"] = format_ts(start)
        if end is not None:
            params["to"] = format_ts(end)
        return await self._paged_passings(f"/passings/device/{deviceid}", params, "device passings")

    async def max_num_passing(self, token_session: str) -> int:
        """Highest num_passing the session holds, 0 if none.

        The session's `last` is only a hint: passings at or above it are read back, and if there are
        none (the hint is stale or means something else) the whole session is paged."""
        info = await self.session_info(token_session)
        if info.last is not None and info.last >= 0:
            tail = await self.session_passings(token_session, first=info.last)
            if tail:
                return max(p.num_passing for p in tail)
        every = await self.session_passings(token_session)
        return max((p.num_passing for p in every), default=0)

    @staticmethod
    def _parse(fn: Callable[[Any], T], item: Any, op: str) -> T:
        try:
            return fn(item)
        except ResponseShapeError as exc:
            raise RetryableError(f"{op}: {exc}") from None


def _as_list(result: Any) -> list[Any]:
    if result is None:
        return []
    if isinstance(result, list):
        return result
    return [result]


def _is_empty_404(exc: NotFoundError, wording: str) -> bool:
    return bool(exc.description) and wording in (exc.description or "").lower()
