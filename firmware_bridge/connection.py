"""The only module that awaits the scanner's socket or serial port: runs LinkProtocol over it.

``tcp://HOST:PORT`` uses asyncio streams; ``serial:///dev/ttyUSB0?baudrate=921600`` uses
pyserial-asyncio. The link reconnects with capped, jittered exponential backoff and re-sends
queued commands (BELT_STOP, HOLD...) once it is up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from .errors import LinkError
from .frames import BeltStart, BeltStop, Hold, RequestCalibration
from .protocol import DeliveryFailed, Event, LinkProtocol, LinkSilent, Role

log = logging.getLogger("firmware_bridge.link")

Command = BeltStop | BeltStart | Hold | RequestCalibration
_TICK = 0.05  # s between protocol ticks (retransmits, silence detection)


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    CLOSED = "closed"


async def open_stream(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open ``tcp://host:port`` or ``serial:///dev/tty...[?baudrate=N]``."""
    parts = urlsplit(url)
    try:
        if parts.scheme == "tcp":
            if not parts.hostname or parts.port is None:
                raise LinkError(f"{url}: tcp:// needs host:port")
            return await asyncio.open_connection(parts.hostname, parts.port)
        if parts.scheme == "serial":
            import serial_asyncio

            query = parse_qs(parts.query)
            baud = int(query.get("baudrate", ["921600"])[0])
            reader, writer = await serial_asyncio.open_serial_connection(
                url=parts.path, baudrate=baud
            )
            return reader, writer
    except (OSError, ValueError) as exc:
        raise LinkError(f"cannot open {url}: {exc}") from exc
    raise LinkError(f"{url}: scheme must be tcp:// or serial://")


class ScannerLink:
    """Keeps the scanner link up and turns its bytes into protocol events.

    ``on_event`` is called synchronously on the event loop for every event; it must be quick
    (the assembler's per-line work is microseconds; per-parcel work a few milliseconds).
    """

    def __init__(
        self,
        url: str,
        on_event: Callable[[Event], None],
        *,
        on_state: Callable[[LinkState], None] | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._on_event = on_event
        self._on_state = on_state
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock
        self.state = LinkState.DOWN
        self.protocol: LinkProtocol | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._queued: list[Command] = []
        self._closing = False
        self._closed = asyncio.Event()
        self.connects = 0
        self.last_error: str | None = None

    def _set_state(self, state: LinkState) -> None:
        if state is not self.state:
            self.state = state
            log.info("scanner link %s: %s", self.url, state.value)
            if self._on_state is not None:
                self._on_state(state)

    def send(self, command: Command) -> None:
        """Send a command now, or as soon as the link is up (commands are acknowledged).

        Raises LocalProtocolError at once for a command the protocol cannot carry.
        """
        command.encode_payload()
        if self.protocol is None or self._writer is None or self.state is not LinkState.UP:
            self._queued.append(command)
            return
        self._write(self.protocol.send(command, self._clock()))

    def _write(self, data: bytes) -> None:
        if data and self._writer is not None:
            self._writer.write(data)

    async def run(self) -> None:
        """Connect, serve, reconnect; returns after ``close()``."""
        delay = self._backoff_initial
        while not self._closing:
            self._set_state(LinkState.CONNECTING)
            try:
                reader, writer = await open_stream(self.url)
            except LinkError as exc:
                self.last_error = str(exc)
                self._set_state(LinkState.DOWN)
                await self._pause(delay)
                delay = min(delay * 2, self._backoff_max)
                continue
            delay = self._backoff_initial
            try:
                await self._serve(reader, writer)
            except (ConnectionError, OSError) as exc:
                self.last_error = str(exc)
                log.warning("scanner link %s lost: %s", self.url, exc)
            finally:
                self._writer = None
                self.protocol = None
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
            if not self._closing:
                self._set_state(LinkState.DOWN)
                await self._pause(delay)
        self._set_state(LinkState.CLOSED)

    async def _pause(self, delay: float) -> None:
        """Back off before reconnecting; ``close()`` cuts it short."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), delay * random.uniform(0.5, 1.0))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = self.protocol = LinkProtocol(Role.BRIDGE)
        self._writer = writer
        proto.started(self._clock())
        self.connects += 1
        self._set_state(LinkState.UP)
        queued, self._queued = self._queued, []
        # On a serial line nothing tells the scanner we are here: this first frame opens the
        # session (the scanner answers with HELLO and CALIBRATION). Harmless over TCP.
        if not any(isinstance(c, RequestCalibration) for c in queued):
            queued.insert(0, RequestCalibration())
        for command in queued:
            self._write(proto.send(command, self._clock()))
        ticker = asyncio.get_running_loop().create_task(self._tick(proto))
        try:
            while not self._closing:
                data = await reader.read(65536)
                if not data:
                    if self._closing:
                        return
                    raise ConnectionResetError("scanner closed the link")
                for event in proto.receive_data(data, self._clock()):
                    self._on_event(event)
                self._write(proto.data_to_send())
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            # commands the scanner never acknowledged go out again on the next connection
            self._queued[:0] = [p for p in proto.unacknowledged() if isinstance(p, Command)]

    async def _tick(self, proto: LinkProtocol) -> None:
        while True:
            await asyncio.sleep(_TICK)
            for event in proto.tick(self._clock()):
                if isinstance(event, LinkSilent):
                    log.warning("scanner silent for %.1f s: reconnecting", event.silent_s)
                    if self._writer is not None:
                        self._writer.close()
                elif isinstance(event, DeliveryFailed):
                    log.error("scanner did not acknowledge %s", event.message)
                self._on_event(event)
            self._write(proto.data_to_send())

    async def close(self) -> None:
        self._closing = True
        self._closed.set()
        if self._writer is not None:
            self._writer.close()
