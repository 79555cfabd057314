"""Shared fixtures: a fast virtual scanner, a fake gateway, a bridge wired to both."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from firmware_bridge.app import Bridge, BridgeConfig
from firmware_bridge.phantoms import ProceduralSource
from firmware_bridge.simulator import SimulatorConfig, VirtualScanner

from .fake_gateway import KEY, FakeGateway

PIXELS = 64


def fast_scanner(parcels: int, *, rate: float = 3000.0, seed: int = 1) -> VirtualScanner:
    """Small, fast scanner: 64 px, thousands of lines/s, no random misses or faults."""
    config = SimulatorConfig(
        pixels=PIXELS,
        line_rate=rate,
        lead_gap_lines=(20, 30),
        trail_gap_lines=45,
        parcels=parcels,
        source="procedural",
        seed=seed,
        barcode_miss_rate=0.0,
        fault_interval_s=None,
        boot_id=0x1234,
    )
    return VirtualScanner(config, source=ProceduralSource(min_lines=30, max_lines=60))


def bridge_config(scanner_url: str, gateway_url: str, spool: Path, **kw: object) -> BridgeConfig:
    params: dict[str, object] = {
        "scanner": scanner_url,
        "gateway": gateway_url,
        "key": KEY,
        "site_id": "site-1",
        "spool_path": spool,
        "status_interval": 0.0,
        "upload_backoff_initial": 0.05,
        "upload_backoff_max": 0.3,
        "link_backoff_max": 0.3,
    }
    params.update(kw)
    return BridgeConfig(**params)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_bridge(
    scanner: VirtualScanner | asyncio.Server, gateway: FakeGateway, spool: Path, **kw: object
) -> AsyncIterator[Bridge]:
    """A bridge started against ``scanner`` (a virtual scanner, served here, or a server already
    listening) and ``gateway``; stopped, with the scanner's server, on leaving."""
    server = scanner if isinstance(scanner, asyncio.Server) else await scanner.serve_tcp()
    url = f"tcp://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    bridge = Bridge(bridge_config(url, gateway.url, spool, **kw))
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()
        server.close()
        await server.wait_closed()


async def wait_until(predicate: Callable[[], bool], within: float = 15.0) -> None:
    """Poll state owned by other tasks (scanner, bridge, gateway), bounded by ``within`` s."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the state has no event to wait on
            await asyncio.sleep(0.02)


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    gw = FakeGateway()
    await gw.start()
    yield gw
    await gw.stop()
