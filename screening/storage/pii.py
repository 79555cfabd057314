"""SQL for the check of the personal-data matching key a database's records were made with."""

from __future__ import annotations

from screening.storage import Conn

# DO UPDATE (a no-op), not DO NOTHING: it returns the row another session committed first
# (DO NOTHING returns nothing, and a read in the same statement does not see that row).
CLAIM_KEY_CHECK = """
INSERT INTO pii_key_check (hmac_check) VALUES ($1)
ON CONFLICT (only_row) DO UPDATE SET only_row = EXCLUDED.only_row
RETURNING hmac_check
"""
RECORDED_KEY_CHECK = "SELECT hmac_check FROM pii_key_check"
# Events whose stored payload is the event as received (no personal data was redacted from it,
# no agreement added): their digest is the keyed HMAC of that payload's canonical text.
SAMPLE_DIGESTED = """
SELECT payload::text AS payload, payload_digest FROM events
WHERE event_type IN ('parcel.sealed', 'inspection.completed', 'parcel.dispatched')
LIMIT $1
"""


async def recorded_key_check(conn: Conn) -> bytes | None:
    check: bytes | None = await conn.fetchval(RECORDED_KEY_CHECK)
    return check


async def claim_key_check(conn: Conn, check: bytes) -> bytes:
    """The database's recorded key check: ``check`` when none was recorded before (it is then
    recorded), else the one recorded first."""
    recorded: bytes = await conn.fetchval(CLAIM_KEY_CHECK, check)
    return recorded


async def sample_digested_events(conn: Conn, limit: int) -> list[tuple[str, bytes]]:
    """A few stored events as (payload JSON, payload_digest), to test a key against."""
    return [
        (r["payload"], bytes(r["payload_digest"])) for r in await conn.fetch(SAMPLE_DIGESTED, limit)
    ]
