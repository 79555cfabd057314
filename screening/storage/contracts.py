"""SQL for contract customers: the security agreements that stand in for a sender's ID."""

from __future__ import annotations

from collections.abc import Iterable

from screening.domain.records import ContractAgreement, ContractCustomer
from screening.storage import Conn

# The customer with its latest agreement, and that agreement added to its history (an agreement
# recorded again, with other dates, replaces its earlier entry: an end date set early, say).
UPSERT_CONTRACT = """
WITH customer AS (
    INSERT INTO contract_customers (site_id, customer_ref, name, uscc, agreement_no, valid_from,
                                    valid_until)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (site_id, customer_ref) DO UPDATE SET
        name = EXCLUDED.name, uscc = EXCLUDED.uscc, agreement_no = EXCLUDED.agreement_no,
        valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until, updated_at = now()
    RETURNING site_id, customer_ref
)
INSERT INTO contract_agreements (site_id, customer_ref, agreement_no, valid_from, valid_until)
SELECT site_id, customer_ref, $5, $6, $7 FROM customer
ON CONFLICT (site_id, customer_ref, agreement_no) DO UPDATE SET
    valid_from = EXCLUDED.valid_from, valid_until = EXCLUDED.valid_until, recorded_at = now()
"""
SELECT_AGREEMENTS = """
SELECT a.site_id, a.customer_ref, a.agreement_no, a.valid_from, a.valid_until
FROM contract_agreements a
JOIN unnest($1::text[], $2::text[]) AS k(site_id, customer_ref)
  ON a.site_id = k.site_id AND a.customer_ref = k.customer_ref
ORDER BY a.valid_from DESC, a.agreement_no
"""
SELECT_CONTRACTS = """
SELECT site_id, customer_ref, name, uscc, agreement_no, valid_from, valid_until
FROM contract_customers WHERE site_id = $1 ORDER BY customer_ref
"""


async def upsert_contract(conn: Conn, c: ContractCustomer) -> None:
    a = c.agreement
    await conn.execute(UPSERT_CONTRACT, c.site_id, c.customer_ref, c.name, c.uscc,
                       a.agreement_no, a.valid_from, a.valid_until)


async def find_agreements(
    conn: Conn, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], list[ContractAgreement]]:
    """Every agreement on file for these (site_id, customer_ref) pairs, the latest-starting
    first; a customer without one is absent."""
    keys = sorted(set(keys))
    if not keys:
        return {}
    rows = await conn.fetch(SELECT_AGREEMENTS, [k[0] for k in keys], [k[1] for k in keys])
    out: dict[tuple[str, str], list[ContractAgreement]] = {}
    for r in rows:
        out.setdefault((r["site_id"], r["customer_ref"]), []).append(
            ContractAgreement(r["agreement_no"], r["valid_from"], r["valid_until"])
        )
    return out


async def list_contracts(conn: Conn, site_id: str) -> list[dict[str, object]]:
    return [dict(r) for r in await conn.fetch(SELECT_CONTRACTS, site_id)]

