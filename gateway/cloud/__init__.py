"""The RUFUS Cloud side of the gateway: the API client and the values it takes and returns."""

from gateway.cloud.client import RufusClient, Timeouts
from gateway.cloud.models import (
    Bound,
    Closed,
    CloudPassing,
    Device,
    DeviceBind,
    InsertResult,
    SessionCreate,
    SessionCreated,
    SessionInfo,
    Unbound,
)

__all__ = [
    "Bound",
    "Closed",
    "CloudPassing",
    "Device",
    "DeviceBind",
    "InsertResult",
    "RufusClient",
    "SessionCreate",
    "SessionCreated",
    "SessionInfo",
    "Timeouts",
    "Unbound",
]
