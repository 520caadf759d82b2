"""What an emulator is started with: keys, dialect, faults. Parsing of the command-line forms lives
here too, so the `emulator` command, the demo and the chaos harness read them the same way."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

Dialect = Literal["enveloped", "bare"]
ACCESS_TYPES = ("READ", "WRITE", "READ_WRITE")


@dataclass(frozen=True)
class ApiKey:
    key: str
    access: str = "READ_WRITE"  # READ | WRITE | READ_WRITE
    unbind: bool = False

    def __post_init__(self) -> None:
        if self.access not in ACCESS_TYPES:
            raise ValueError(f"api key access type must be one of {', '.join(ACCESS_TYPES)}, not {self.access!r}")
        if not self.key:
            raise ValueError("api key must not be empty")

    def __repr__(self) -> str:
        # the key itself is a secret even in a test double: tests print reprs on failure
        return f"ApiKey(access={self.access!r}, unbind={self.unbind})"

    def can(self, method: str) -> bool:
        if method in ("GET", "HEAD"):
            return self.access in ("READ", "READ_WRITE")
        if method in ("POST", "PATCH"):
            return self.access in ("WRITE", "READ_WRITE")
        if method == "DELETE":
            return self.access in ("WRITE", "READ_WRITE") and self.unbind
        return False

    @classmethod
    def parse(cls, spec: str) -> ApiKey:
        """`KEY:READ|WRITE|READ_WRITE[:unbind]`; a bare KEY means READ_WRITE."""
        parts = spec.split(":")
        if len(parts) > 3 or not parts[0]:
            raise ValueError("expected KEY:READ|WRITE|READ_WRITE[:unbind]")
        access = parts[1].upper() if len(parts) > 1 else "READ_WRITE"
        unbind = False
        if len(parts) == 3:
            if parts[2].lower() != "unbind":
                raise ValueError(f"third part must be 'unbind', not {parts[2]!r}")
            unbind = True
        return cls(parts[0], access, unbind)


def demo_key() -> ApiKey:
    """A key in the vendor's shape (`ror-` + 20 hex) with every right, for rehearsals."""
    return ApiKey("ror-" + secrets.token_hex(10), "READ_WRITE", True)


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0  # share of API requests answered error_status before being processed
    error_status: int = 503
    retry_after: float | None = None  # seconds, sent as Retry-After with injected errors
    latency_ms: int = 0  # added before every API answer
    drop_after_commit: float = 0.0  # share of writes committed then answered by closing the connection
    hang_rate: float = 0.0  # share of API requests held without an answer for hang_s
    hang_s: float = 300.0
    reject_bib: str | None = None  # any passings batch holding this bib gets a 400 naming it
    offline: bool = False  # the API port refuses connections

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_after_commit", "hang_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: must be between 0 and 1, not {value}")
        if not 400 <= self.error_status <= 599:
            raise ValueError(f"error_status: must be an HTTP error status 400..599, not {self.error_status}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms: must be >= 0, not {self.latency_ms}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after: must be >= 0, not {self.retry_after}")
        if self.hang_s <= 0:
            raise ValueError(f"hang_s: must be > 0, not {self.hang_s}")

    def replace(self, **changes: Any) -> Faults:
        """A copy with `changes` applied; values may be strings (from a spec or JSON) and are converted."""
        known = {f.name: f for f in dataclasses.fields(self)}
        converted: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r} (known: {', '.join(known)})")
            converted[name] = _convert(name, value)
        return dataclasses.replace(self, **converted)

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """`error_rate=0.1,error_status=503,retry_after=1,...` as on the command line."""
        changes: dict[str, str] = {}
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"{part!r}: expected name=value")
            changes[name.strip()] = value.strip()
        return cls().replace(**changes)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FLOATS = {"error_rate", "drop_after_commit", "hang_rate", "hang_s"}
_INTS = {"error_status", "latency_ms"}


def _convert(name: str, value: Any) -> Any:
    try:
        if name in _FLOATS:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if name in _INTS:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if name == "retry_after":
            if value is None or value == "" or (isinstance(value, str) and value.lower() in ("none", "null")):
                return None
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if name == "reject_bib":
            if value is None or value == "":
                return None
            if isinstance(value, bool | dict | list):
                raise TypeError
            return str(value)
        if name == "offline":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"{name}: bad value {value!r}") from None
    raise ValueError(f"unknown fault {name!r}")


@dataclass(frozen=True)
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    admin_port: int = 0
    admin_token: str | None = None  # generated when not given (see Emulator.admin_token)
    db: str | None = None  # SQLite path; None keeps everything in memory
    dialect: Dialect = "enveloped"
    api_keys: list[ApiKey] = field(default_factory=list)  # empty: one demo key is generated
    faults: Faults = field(default_factory=Faults)
    seed: int | None = None  # for the fault dice, so a chaos run can be replayed
    # The vendor's pages disagree on whether POST /devices requires `type`; True plays the stricter one.
    bind_requires_type: bool = False
    max_logged_requests: int = 100_000
    max_body_bytes: int = 64 * 1024 * 1024  # larger request bodies get a 413 (5000 passings are ~1.5 MB)

    def __post_init__(self) -> None:
        if self.dialect not in ("enveloped", "bare"):
            raise ValueError(f"dialect: must be 'enveloped' or 'bare', not {self.dialect!r}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes: must be >= 1, not {self.max_body_bytes}")

    def __repr__(self) -> str:
        return (
            f"EmulatorConfig(host={self.host!r}, port={self.port}, admin_port={self.admin_port}, db={self.db!r}, "
            f"dialect={self.dialect!r}, keys={len(self.api_keys)}, bind_requires_type={self.bind_requires_type}, "
            f"faults={self.faults!r})"
        )
