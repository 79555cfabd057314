"""SQL for API keys (stored as SHA-256 hashes; the key itself is shown once at creation)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from screening.storage import Conn

INSERT_KEY = """
INSERT INTO api_keys (key_id, key_hash, role, site_ids, label) VALUES ($1, $2, $3, $4, $5)
"""
SELECT_BY_HASH = """
SELECT key_id, role, site_ids, label, created_at, revoked_at FROM api_keys WHERE key_hash = $1
"""
SELECT_ALL = """
SELECT key_id, role, site_ids, label, created_at, revoked_at FROM api_keys ORDER BY created_at
"""
REVOKE = """
UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL RETURNING key_id
"""


@dataclass(frozen=True, slots=True)
class StoredKey:
    key_id: str
    role: str
    site_ids: tuple[str, ...]
    label: str
    created_at: datetime
    revoked_at: datetime | None


def _key(r: asyncpg.Record) -> StoredKey:
    return StoredKey(
        key_id=r["key_id"],
        role=r["role"],
        site_ids=tuple(r["site_ids"]),
        label=r["label"],
        created_at=r["created_at"],
        revoked_at=r["revoked_at"],
    )


async def insert_key(
    conn: Conn,
    key_id: str,
    key_hash: bytes,
    role: str,
    site_ids: list[str],
    label: str,
) -> None:
    await conn.execute(INSERT_KEY, key_id, key_hash, role, site_ids, label)


async def active_key_hashes(conn: Conn) -> dict[str, bytes]:
    """Each active key's id and the hash of the key."""
    rows = await conn.fetch("SELECT key_id, key_hash FROM api_keys WHERE revoked_at IS NULL")
    return {r["key_id"]: bytes(r["key_hash"]) for r in rows}


async def find_by_hash(conn: Conn, key_hash: bytes) -> StoredKey | None:
    row = await conn.fetchrow(SELECT_BY_HASH, key_hash)
    return _key(row) if row else None


async def list_keys(conn: Conn) -> list[StoredKey]:
    return [_key(r) for r in await conn.fetch(SELECT_ALL)]


async def revoke_key(conn: Conn, key_id: str) -> bool:
    return await conn.fetchval(REVOKE, key_id) is not None
