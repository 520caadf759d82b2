"""Typed values the RUFUS client hands back. Parsing is lenient where the vendor's two descriptions
disagree (coordinates as strings or numbers, a single object or an array of one) and strict where a
wrong guess would corrupt data (a passing's timestamp and num_passing)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.model import is_cloud_ts, parse_ts


class ResponseShapeError(ValueError):
    """A 2xx body that does not carry what the contract promises (the client maps it to RetryableError)."""


@dataclass(frozen=True, slots=True)
class DeviceBind:
    """What POST /devices is sent (`model` and `serial_number` required; one vendor page also requires `type`)."""

    model: str
    serial_number: str
    alias: str | None = None
    firmware: str | None = None
    type: str | None = None


@dataclass(frozen=True, slots=True)
class Bound:
    deviceid: str
    description: str | None = None  # "Device binded succesfully", as the vendor spells it


@dataclass(frozen=True, slots=True)
class Unbound:
    deviceid: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class SessionCreate:
    deviceid: str
    alias: str | None = None


@dataclass(frozen=True, slots=True)
class SessionCreated:
    token_session: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Closed:
    token_session: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Device:
    deviceid: str
    model: str | None = None
    serial_number: str | None = None
    alias: str | None = None
    firmware: str | None = None
    type: str | None = None
    creation_date: str | None = None  # as the cloud formats it; not used for ordering
    last_seen: str | None = None
    sessions: int | None = None
    passings: int | None = None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    token_session: str
    alias: str | None
    creation_date: str | None
    active: bool
    passings: int
    duration: float | None = None
    first: int | None = None  # lowest num_passing held, when the cloud reports it as a number
    last: int | None = None  # highest num_passing held, when the cloud reports it as a number


@dataclass(frozen=True, slots=True)
class InsertResult:
    inserted_count: int
    duplicate_count: int


@dataclass(frozen=True, slots=True)
class CloudPassing:
    token_session: str
    deviceid: str | None
    timestamp: datetime
    num_passing: int
    bib: str
    chip: str | None = None
    participant_id: str | None = None
    status: str | None = None
    timezone: str | None = None
    gender: str | None = None
    latitude: float | None = None
    longitude: float | None = None


def _need(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj or obj[key] is None:
        raise ResponseShapeError(f"{what}: response lacks {key!r}")
    return obj[key]


def opt_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def opt_int(value: Any) -> int | None:
    """An integer the cloud may send as a number or a numeric string; anything else is unknown (None)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def opt_float(value: Any) -> float | None:
    """Coordinates come back as strings ("0.0") in every example and as numbers in the OpenAPI."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return float(text)
        except ValueError:
            return None
    return None


def parse_cloud_time(text: Any, what: str) -> datetime:
    """The contract's `YYYY-MM-DDTHH:mm:ss.sssZ`, or failing that any ISO 8601 with a zone."""
    if not isinstance(text, str):
        raise ResponseShapeError(f"{what}: timestamp is not a string: {text!r}")
    if is_cloud_ts(text):
        return parse_ts(text)
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ResponseShapeError(f"{what}: unreadable timestamp {text!r}") from exc
    if ts.tzinfo is None:
        raise ResponseShapeError(f"{what}: timestamp without a zone {text!r}")
    return ts.astimezone(UTC)


def device_from(obj: Any) -> Device:
    if not isinstance(obj, dict):
        raise ResponseShapeError(f"device: expected an object, got {type(obj).__name__}")
    return Device(
        deviceid=str(_need(obj, "deviceid", "device")),
        model=opt_str(obj.get("model")),
        serial_number=opt_str(obj.get("serial_number")),
        alias=opt_str(obj.get("alias")),
        firmware=opt_str(obj.get("firmware")),
        type=opt_str(obj.get("type")),
        creation_date=opt_str(obj.get("creation_date")),
        last_seen=opt_str(obj.get("last_seen")),
        sessions=opt_int(obj.get("sessions")),
        passings=opt_int(obj.get("passings")),
    )


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return bool(value)


def session_from(obj: Any) -> SessionInfo:
    if not isinstance(obj, dict):
        raise ResponseShapeError(f"session: expected an object, got {type(obj).__name__}")
    duration = obj.get("duration")
    return SessionInfo(
        token_session=str(_need(obj, "token_session", "session")),
        alias=opt_str(obj.get("alias")),
        creation_date=opt_str(obj.get("creation_date")),
        active=_bool(obj.get("active")),
        passings=opt_int(obj.get("passings")) or 0,
        duration=opt_float(duration),
        first=opt_int(obj.get("first")),
        last=opt_int(obj.get("last")),
    )


def passing_from(obj: Any) -> CloudPassing:
    if not isinstance(obj, dict):
        raise ResponseShapeError(f"passing: expected an object, got {type(obj).__name__}")
    num = opt_int(_need(obj, "num_passing", "passing"))
    if num is None:
        raise ResponseShapeError(f"passing: num_passing is not an integer: {obj.get('num_passing')!r}")
    bib = obj.get("bib")
    return CloudPassing(
        token_session=str(_need(obj, "token_session", "passing")),
        deviceid=opt_str(obj.get("deviceid")),
        timestamp=parse_cloud_time(_need(obj, "timestamp", "passing"), f"passing {num}"),
        num_passing=num,
        bib="" if bib is None else str(bib),
        chip=opt_str(obj.get("chip", obj.get("chips"))),
        participant_id=opt_str(obj.get("participant_id")),
        status=opt_str(obj.get("status")),
        timezone=opt_str(obj.get("timezone")),
        gender=opt_str(obj.get("gender")),
        latitude=opt_float(obj.get("latitude")),
        longitude=opt_float(obj.get("longitude")),
    )
