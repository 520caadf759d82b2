"""A RUFUS Cloud emulator for tests, rehearsals and the demo: all v0 endpoints, both dialects,
SQLite persistence, run-time faults."""

from gateway.emulator.config import ApiKey, EmulatorConfig, Faults
from gateway.emulator.server import Emulator

__all__ = ["ApiKey", "Emulator", "EmulatorConfig", "Faults"]
