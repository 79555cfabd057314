"""``python -m firmware_bridge --scanner URL --gateway URL --key KEY --site SITE``: run a bridge."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from .app import Bridge, BridgeConfig
from .assembler import AssemblerConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m firmware_bridge",
        description="Scanner firmware bridge: line-scan link -> parcel images -> gateway.",
    )
    p.add_argument(
        "--scanner",
        required=True,
        help="tcp://HOST:PORT, serial:///dev/ttyUSB0[?baudrate=N] or video://DEVICE-or-FILE",
    )
    p.add_argument("--gateway", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080")
    p.add_argument(
        "--key",
        default=os.environ.get("BRIDGE_API_KEY"),
        help="station API key (or BRIDGE_API_KEY in the environment)",
    )
    p.add_argument("--site", required=True, help="site id this scanner belongs to")
    p.add_argument("--scanner-id", default=None, help="default: the scanner's HELLO device id")
    p.add_argument("--spool", type=Path, default=Path("var/bridge/spool.sqlite3"))
    p.add_argument("--spool-max-scans", type=int, default=20_000)
    p.add_argument("--spool-max-mb", type=int, default=4096)
    p.add_argument("--status-interval", type=float, default=30.0, help="s; 0 disables")
    p.add_argument("--status-port", type=int, default=None, help="serve GET /status on 127.0.0.1")
    p.add_argument("--max-parcel-lines", type=int, default=2000)
    p.add_argument("--gap-lines", type=int, default=40)
    p.add_argument("--barcode-offset-lines", type=int, default=0)
    p.add_argument("--no-holds", action="store_true", help="do not open the hold-order stream")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if not args.key:
        p.error("--key (or BRIDGE_API_KEY) is required")
    return args


def config_from_args(args: argparse.Namespace) -> BridgeConfig:
    return BridgeConfig(
        scanner=args.scanner,
        gateway=args.gateway,
        key=args.key,
        site_id=args.site,
        scanner_id=args.scanner_id,
        spool_path=args.spool,
        max_spool_scans=args.spool_max_scans,
        max_spool_bytes=args.spool_max_mb << 20,
        status_interval=args.status_interval,
        status_port=args.status_port,
        holds=not args.no_holds,
        assembler=AssemblerConfig(
            max_lines=args.max_parcel_lines,
            gap_lines=args.gap_lines,
            barcode_offset_lines=args.barcode_offset_lines,
        ),
    )


async def run(config: BridgeConfig) -> None:
    bridge = Bridge(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await bridge.start()
    try:
        await stop.wait()
    finally:
        await bridge.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    asyncio.run(run(config_from_args(args)))


if __name__ == "__main__":
    main()
