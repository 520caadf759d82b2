"""The virtual timer: a seeded race (`Race`) played through a link by `drive`, speaking a reader's protocol."""

from __future__ import annotations

from gateway.simulator.driver import Driver, DriveStats, drive
from gateway.simulator.race import Race
from gateway.simulator.truth import Truth, TruthWriter, load

__all__ = ["DriveStats", "Driver", "Race", "Truth", "TruthWriter", "drive", "load"]
