"""What the benchmarks share: serving an app on loopback, and a database to run against."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from screening.runtime import tune_collector
from screening.settings import Settings
from screening.storage.database import embedded_postgres


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Start `app` on a free loopback port: its runner (to clean up) and base URL. The process's
    collector is then tuned as `screening serve` tunes the gateway's once it has started."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    tune_collector()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def run_on_database(run: Callable[[str], Coroutine[Any, Any, None]]) -> int:
    """`run(dsn)` against SCREENING_DATABASE_URL, else an embedded PostgreSQL in a temporary
    directory (removed afterwards)."""
    settings = Settings()
    if settings.database_url is not None:
        asyncio.run(run(settings.database_url.get_secret_value()))
        return 0
    with tempfile.TemporaryDirectory() as tmp, embedded_postgres(Path(tmp) / "pg") as dsn:
        asyncio.run(run(dsn))
    return 0
