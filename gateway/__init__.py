"""rufus-gateway: timing-reader detections to the RUFUS Cloud, nothing lost, nothing doubled."""

__version__ = "0.1.0"
