"""What the benchmarks share: serving an app on loopback, and a database to run against."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from screening.protection import PersonalDataVault
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


# The personal-data keys of the benchmarks' records and gateways: fixed (no real data is
# sealed), so that a SCREENING_DATABASE_URL kept between runs still matches them (a gateway
# refuses to start with other keys than its database's records were made with).
BENCH_PII_KEYS = PersonalDataVault(
    keys={"k1": bytes(range(100, 132))}, active_key_id="k1", hmac_key=bytes(range(132, 164))
)


def bench_env(**settings: str) -> dict[str, str]:
    """The environment of a gateway a benchmark starts: this one's, the given SCREENING_*
    settings, and BENCH_PII_KEYS."""
    return {
        **os.environ,
        "SCREENING_PII_KEYS_JSON": json.dumps(BENCH_PII_KEYS.to_json_dict()),
        **{f"SCREENING_{name.upper()}": value for name, value in settings.items()},
    }


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def process_tree(root: int) -> list[int]:
    """``root`` and its live descendants (from /proc: Linux)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(stat[1])
    tree = [root]
    for pid in tree:  # grows as children are found
        tree.extend(child for child, parent in parents.items() if parent == pid)
    return tree


class ServerProcess:
    """A server run as its own process tree (a supervisor and its workers, say), started with
    `command` and ready once `processes` lines containing `ready_text` came on its stderr."""

    def __init__(self, command: list[str], env: dict[str, str], ready_text: bytes,
                 processes: int) -> None:  # fmt: skip
        self.command = command
        self.env = env
        self.ready_text = ready_text
        self.processes = processes
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ServerProcess:
        self.proc = await asyncio.create_subprocess_exec(
            *self.command, env=self.env, stderr=asyncio.subprocess.PIPE
        )
        try:
            await self._ready(self.proc)
        except BaseException:
            if self.proc.returncode is None:
                self.proc.kill()  # its workers stop once they see it gone
                await self.proc.wait()
            raise
        self._drain = asyncio.create_task(self._discard(self.proc.stderr))
        return self

    async def _ready(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        waiting = self.processes
        while waiting:
            line = await asyncio.wait_for(proc.stderr.readline(), timeout=120)
            if not line:
                raise RuntimeError(f"{self.command[2:4]} exited before it was ready")
            if self.ready_text in line:
                waiting -= 1

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.readline():
            pass

    def pids(self) -> list[int]:
        assert self.proc is not None
        return process_tree(self.proc.pid)

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 40)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._drain.cancel()
