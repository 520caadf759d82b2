"""The RUFUS Cloud side of the gateway: the API client and the values it returns."""

from gateway.cloud.client import RufusClient, Timeouts
from gateway.cloud.models import CloudPassing, Device, InsertResult, SessionInfo

__all__ = ["CloudPassing", "Device", "InsertResult", "RufusClient", "SessionInfo", "Timeouts"]
