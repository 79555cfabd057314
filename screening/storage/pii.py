"""SQL for the check of the personal-data matching key a database's records were made with."""

from __future__ import annotations

from screening.storage import Conn

CLAIM_KEY_CHECK = """
WITH claimed AS (
    INSERT INTO pii_key_check (hmac_check) VALUES ($1)
    ON CONFLICT (only_row) DO NOTHING
    RETURNING hmac_check
)
SELECT hmac_check FROM claimed UNION ALL SELECT hmac_check FROM pii_key_check
LIMIT 1
"""


async def claim_key_check(conn: Conn, check: bytes) -> bytes:
    """The database's recorded key check: ``check`` when none was recorded before (it is then
    recorded), else the one recorded first."""
    recorded: bytes = await conn.fetchval(CLAIM_KEY_CHECK, check)
    return recorded
