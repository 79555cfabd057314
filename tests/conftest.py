"""Shared fixtures: a real PostgreSQL (embedded unless SCREENING_TEST_DATABASE_URL is set) and a
real gateway served on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from screening.api.protocol import GatewayRunner
from screening.app import create_app
from screening.domain.access import Role
from screening.protection import PersonalDataVault
from screening.services import access
from screening.settings import Settings
from screening.storage.database import create_pool, embedded_postgres, migrate


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    external = os.environ.get("SCREENING_TEST_DATABASE_URL")
    if external:
        yield external
        return
    # Not under pytest's basetemp: pytest prunes old basetemps, which would pull the data
    # directory from under a server that another concurrent test run still uses.
    root = Path(tempfile.mkdtemp(prefix="screening-test-pg-"))
    try:
        with embedded_postgres(root / "data") as dsn:
            yield dsn
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def make_database(server_dsn: str) -> str:
    """A fresh, empty database on the test server; returns its DSN."""
    name = f"screening_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_dsn, name)


@pytest.fixture(scope="session")
async def database_url(server_dsn: str) -> str:
    dsn = await make_database(server_dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    return dsn


SHUTDOWN_LIMIT_S = 30.0


async def bounded_cleanup(runner: web.AppRunner) -> None:
    """Stop a test gateway; a shutdown that stalls warns instead of hanging the run."""
    try:
        await asyncio.wait_for(runner.cleanup(), SHUTDOWN_LIMIT_S)
    except TimeoutError:
        warnings.warn(f"gateway shutdown took over {SHUTDOWN_LIMIT_S} s", stacklevel=2)


async def close_pool(pool: asyncpg.Pool[Any]) -> None:
    """Close gracefully, but never hang a test run on a connection a test left acquired."""
    try:
        await asyncio.wait_for(pool.close(), timeout=10)
    except TimeoutError:
        pool.terminate()


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    p = await create_pool(database_url, min_size=1, max_size=8)
    yield p
    await close_pool(p)


@pytest.fixture(scope="session")
def vault() -> PersonalDataVault:
    """The keys of the test database's records: the ones `screening serve` is started with in
    the tests too (a gateway refuses to start with other keys than its records were made with)."""
    from tests.gateway.serving import TEST_PII_KEYS

    return TEST_PII_KEYS


@dataclass
class Keys:
    """API keys for one test site and a second site (to test scope)."""

    site: str
    other_site: str
    by_role: dict[str, str] = field(default_factory=dict)
    other_by_role: dict[str, str] = field(default_factory=dict)
    admin: str = ""


@dataclass
class RunningGateway:
    url: str
    http: aiohttp.ClientSession
    pool: asyncpg.Pool[Any]
    app: web.Application
    keys: Keys

    def auth(self, role: str = "station", *, other: bool = False) -> dict[str, str]:
        if role == "admin":
            return {"Authorization": f"Bearer {self.keys.admin}"}
        table = self.keys.other_by_role if other else self.keys.by_role
        return {"Authorization": f"Bearer {table[role]}"}


async def make_keys(pool: asyncpg.Pool[Any], *, timezone: str = "Asia/Shanghai") -> Keys:
    suffix = uuid.uuid4().hex[:8]
    keys = Keys(site=f"T-{suffix}", other_site=f"O-{suffix}")
    for site in (keys.site, keys.other_site):
        await access.add_site(pool, site, f"test site {site}", timezone=timezone)
    for role in ("station", "reviewer", "supervisor", "police"):
        keys.by_role[role] = (await access.create_key(pool, Role(role), [keys.site]))[1]
        keys.other_by_role[role] = (await access.create_key(pool, Role(role), [keys.other_site]))[1]
    keys.admin = (await access.create_key(pool, Role.ADMIN, []))[1]
    return keys


async def start_gateway(
    settings: Settings, pool: asyncpg.Pool[Any], vault: PersonalDataVault, keys: Keys
) -> tuple[RunningGateway, web.AppRunner]:
    app = create_app(settings, pool=pool, vault=vault)
    runner = GatewayRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    http = aiohttp.ClientSession()
    return RunningGateway(f"http://127.0.0.1:{port}", http, pool, app, keys), runner


@contextlib.asynccontextmanager
async def gateway_with(
    settings: Settings, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> AsyncIterator[RunningGateway]:
    """A gateway on loopback with these settings and fresh keys, cleaned up on leaving."""
    gw, runner = await start_gateway(settings, pool, vault, await make_keys(pool))
    try:
        yield gw
    finally:
        await gw.http.close()
        await bounded_cleanup(runner)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, api_key_cache_s=0.0)


@pytest.fixture
async def gateway(
    settings: Settings, pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> AsyncIterator[RunningGateway]:
    keys = await make_keys(pool)
    gw, runner = await start_gateway(settings, pool, vault, keys)
    try:
        yield gw
    finally:
        await gw.http.close()
        await bounded_cleanup(runner)


@pytest.fixture(scope="session", autouse=True)
async def _no_task_outlives_the_session(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """At the very end (after every other session fixture's teardown), name any task still
    running, then cancel it. The event loop's own close waits for such tasks without a bound
    or a word: one CI run hung there once, and this makes the next one say which task it was.
    """
    yield
    me = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not me]
    if not pending:
        return
    report = io.StringIO()
    print(f"{len(pending)} task(s) still running at the end of the test session:", file=report)
    for task in pending:
        print(repr(task), file=report)
        task.print_stack(file=report)
        task.cancel()
    _, still = await asyncio.wait(pending, timeout=15)
    for task in still:
        print(f"still running 15 s after its cancel: {task!r}", file=report)
    # Past the output capture, which still holds the process's output here.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and terminal is not None:
        with capture.global_and_fixture_disabled():
            terminal.write_line(report.getvalue())
