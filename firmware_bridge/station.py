"""A virtual scanner plus its bridge in this process: one X-ray station for demos.

``screening demo`` (or anything else with an event loop) can run one per site::

    station = await start_station("WH-001", "http://127.0.0.1:8080", key, workdir=Path("var/demo"))
    ...
    await station.stop()
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from .app import Bridge, BridgeConfig
from .simulator import SimulatorConfig, VirtualScanner


@dataclass(slots=True)
class Station:
    site_id: str
    scanner: VirtualScanner
    server: asyncio.Server
    bridge: Bridge

    @property
    def scanner_url(self) -> str:
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"tcp://{host}:{port}"

    async def stop(self) -> None:
        await self.bridge.stop()
        self.server.close()
        await self.server.wait_closed()


async def start_station(
    site_id: str,
    gateway: str,
    key: str,
    *,
    workdir: Path,
    seed: int = 0,
    line_rate: float = 250.0,
    pixels: int = 750,
    source: str = "auto",
    parcels: int | None = None,
    status_interval: float = 30.0,
) -> Station:
    """Start a virtual scanner on a free loopback port and a bridge reading it."""
    scanner = VirtualScanner(
        SimulatorConfig(
            device_id=f"{site_id}-XR1"[:64],
            pixels=pixels,
            line_rate=line_rate,
            source=source,
            seed=seed,
            parcels=parcels,
        )
    )
    server = await scanner.serve_tcp("127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    bridge = Bridge(
        BridgeConfig(
            scanner=f"tcp://{host}:{port}",
            gateway=gateway,
            key=key,
            site_id=site_id,
            spool_path=workdir / f"bridge-{site_id}.sqlite3",
            status_interval=status_interval,
        )
    )
    await bridge.start()
    return Station(site_id, scanner, server, bridge)
