"""The two commands: ``python -m firmware_bridge.simulator`` and ``python -m firmware_bridge``."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from .conftest import wait_until
from .fake_gateway import KEY, FakeGateway


async def test_simulator_and_bridge_commands_deliver_scans(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_bridge.simulator",
        "--port",
        "0",
        "--pixels",
        "96",
        "--rate",
        "2000",
        "--source",
        "procedural",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    bridge = None
    try:
        assert sim.stdout is not None
        async with asyncio.timeout(20):
            line = (await sim.stdout.readline()).decode()
        url = line.rsplit(" ", 1)[-1].strip()
        assert url.startswith("tcp://127.0.0.1:")
        bridge = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "firmware_bridge",
            "--scanner",
            url,
            "--gateway",
            gateway.url,
            "--key",
            KEY,
            "--site",
            "site-1",
            "--spool",
            str(tmp_path / "spool.db"),
            "--status-interval",
            "0.5",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        await wait_until(lambda: len(gateway.scans) >= 2, within=30)
        await asyncio.sleep(0.7)  # at least one periodic status line
        bridge.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            _, err = await bridge.communicate()
        assert bridge.returncode == 0, err.decode()[-2000:]
        log = err.decode()
        assert "status link=up" in log
        assert "lines/s=" in log
    finally:
        for proc in (bridge, sim):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()
