"""Serial ports (`serial:///dev/ttyUSB0?baudrate=115200`, or a bare /dev path) via pyserial-asyncio-fast.

The serial library stays behind this one module (zigpy's serial.py seam), so swapping it touches nothing else.
pyserial-asyncio-fast is the maintained, non-blocking fork: the unmaintained original blocks the loop on close.
"""

from __future__ import annotations

from typing import Any

import serial_asyncio_fast

from gateway.errors import ReaderError
from gateway.links.base import ClientLink, Connection
from gateway.links.tcp import StreamConnection

DEFAULT_BAUDRATE = 9600  # what most timing decoders ship with; the URL's ?baudrate= overrides


class SerialLink(ClientLink):
    """A device path the gateway opens; an unplugged adapter is retried until it comes back."""

    def __init__(
        self,
        url: str,
        device: str,
        name: str | None = None,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        serial_options: dict[str, Any] | None = None,
        **kw: float,
    ) -> None:
        super().__init__(url, name, **kw)
        self.device = device
        self.baudrate = baudrate
        self.serial_options = serial_options or {}

    async def _open(self) -> Connection:
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(
                url=self.device, baudrate=self.baudrate, **self.serial_options
            )
        except Exception as exc:  # serial.SerialException (an OSError subclass only on some versions)
            raise ReaderError(f"open {self.device}: {exc}") from exc
        # Hand the stream pair to the same Connection as TCP: a serial port is just another byte pipe.
        return StreamConnection(reader, writer, self.device, self.state)
