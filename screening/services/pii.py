"""Key rotation for sealed personal data: a new active key, stored records re-sealed, old keys
retired.

A real-name record's ID number, name and phone are sealed (AES-GCM) under the vault's active
key, bound to their row and column (``protection.field_associated_data``). Rotation is three
steps an operator runs in order:

1. ``rotate``: a fresh key joins the keyring and becomes the active one. Every key stays, so
   everything sealed so far still opens. Gateways read the keyring at start: restart them, and
   from then on new records are sealed under the new key.
2. ``reseal``: every stored record that is not yet under the active key, or whose fields are
   bound only to their row (sealed before each field was bound to its column, which let
   someone with write access to the table swap a row's sealed values between columns), is
   opened and sealed again under the active key, each field bound to its column. Batches of
   rows, each in its own transaction with its rows locked: ingest goes on meanwhile, and an
   interrupted run is finished by running it again.
3. ``retire``: a key no stored record uses any more leaves the keyring, so a copy of it that
   leaked opens nothing new.

A record that opens under neither binding is counted as unreadable and left as it is (the
audited read reports it the same way); the run says which ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from screening.protection import (
    PersonalDataError,
    PersonalDataVault,
    SealedValue,
    associated_data,
    field_associated_data,
)
from screening.services.ingest import canonical_text
from screening.storage import events as event_store
from screening.storage import pii as pii_store

# The sealed columns of a real-name record, by the field name their associated data binds.
SEALED_FIELDS = ("document_number", "name", "phone")


class KeyInUseError(Exception):
    """A key cannot leave the keyring: it is the active one, or stored records still use it."""


def rotated(vault: PersonalDataVault, now: datetime | None = None) -> PersonalDataVault:
    """The keyring with a fresh key, named after the moment it was made, made active."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    key_id = f"k{moment:%Y%m%dT%H%M%SZ}"
    suffix = 1
    while key_id in vault.key_ids:  # two rotations within one second
        suffix += 1
        key_id = f"k{moment:%Y%m%dT%H%M%SZ}-{suffix}"
    return vault.rotated(key_id)


@dataclass
class ResealReport:
    """What a ``reseal`` run found and did."""

    examined: int = 0
    resealed: int = 0  # sealed again: under an older key, or bound to their row only
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (site_id, event_id)
    by_key_before: dict[str, int] = field(default_factory=dict)  # the rows each key sealed

    @property
    def current(self) -> int:
        return self.examined - self.resealed - len(self.unreadable)


@dataclass(frozen=True, slots=True)
class _Opened:
    values: dict[str, str | None]  # each sealed field's plaintext (None: not given)
    row_bound: bool  # opened with the row's associated data only (sealed before fields were)


def _open_record(vault: PersonalDataVault, row: asyncpg.Record) -> _Opened | None:
    """A record's sealed fields opened, or None when they do not open as stored."""
    record = (row["site_id"], str(row["event_id"]))
    blobs = {name: row[f"{name}_sealed"] for name in SEALED_FIELDS}
    for row_bound in (False, True):
        try:
            values = {
                name: None
                if blob is None
                else vault.open(
                    SealedValue(row["pii_key_id"], bytes(blob)),
                    aad=associated_data(*record)
                    if row_bound
                    else field_associated_data(*record, name),
                )
                for name, blob in blobs.items()
            }
        except PersonalDataError:
            continue
        return _Opened(values, row_bound)
    return None


async def reseal(
    pool: asyncpg.Pool[Any], vault: PersonalDataVault, batch: int = 500
) -> ResealReport:
    """Seal every stored real-name record under the vault's active key with each field bound to
    its column, where it is not so already (see the module's docstring)."""
    report = ResealReport()
    after: tuple[str, Any] | None = None
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await event_store.lock_sealed_records(conn, after, batch)
            if not rows:
                return report
            updates = []
            for row in rows:
                report.examined += 1
                key_id = row["pii_key_id"]
                report.by_key_before[key_id] = report.by_key_before.get(key_id, 0) + 1
                opened = _open_record(vault, row)
                if opened is None:
                    report.unreadable.append((row["site_id"], str(row["event_id"])))
                    continue
                if key_id == vault.active_key_id and not opened.row_bound:
                    continue
                record = (row["site_id"], str(row["event_id"]))
                sealed = {
                    name: None
                    if value is None
                    else vault.seal(value, aad=field_associated_data(*record, name)).blob
                    for name, value in opened.values.items()
                }
                updates.append((row["site_id"], row["event_id"], sealed))
            await event_store.update_sealed_records(conn, vault.active_key_id, updates)
            report.resealed += len(updates)
            after = (rows[-1]["site_id"], rows[-1]["event_id"])


async def records_by_key(
    pool: asyncpg.Pool[Any], vault: PersonalDataVault
) -> dict[str, tuple[int, datetime | None]]:
    """Each key of the keyring, and each key id stored records name that is not in it (sealed
    by a gateway with another keyring, or retired too soon): how many records it sealed, and
    when the latest of them was received (a gateway still sealing under an old key after a
    rotation has not been restarted)."""
    async with pool.acquire() as conn:
        stored = await event_store.sealed_by_key(conn)
    keys = {k: (0, None) for k in vault.key_ids} | stored
    return dict(sorted(keys.items()))


async def retire(
    pool: asyncpg.Pool[Any], vault: PersonalDataVault, key_id: str
) -> PersonalDataVault:
    """The keyring without ``key_id``: refused while it is active or any record uses it."""
    if key_id not in vault.key_ids:
        raise KeyError(key_id)
    if key_id == vault.active_key_id:
        raise KeyInUseError(f"{key_id} is the active key: rotate first")
    async with pool.acquire() as conn:
        using = await event_store.count_sealed_under(conn, key_id)
    if using:
        raise KeyInUseError(f"{using} stored records are sealed under {key_id}: reseal first")
    return vault.without(key_id)


# What the key check digests: a fixed text, so the check reveals nothing about any record.
KEY_CHECK_TEXT = "screening: the matching key of this database's records"


async def keys_match(pool: asyncpg.Pool[Any], vault: PersonalDataVault) -> bool:
    """Whether ``vault`` holds the matching (HMAC) key this database's records were made with.
    Event digests, which tell a resent event (duplicate) from a different one (conflict), and
    document matching use that key: a gateway with another one would answer a station's retry
    409 conflict. The sealing keys are not checked: they rotate, and each record names the one
    it is sealed under.

    The first gateway to ask records a check of its key; on a database that already holds
    events (from before the check existed) only once its key reproduces their digests, so a
    misconfigured gateway that happens to start first cannot lock the right ones out."""
    check = vault.digest("key-check", KEY_CHECK_TEXT)
    async with pool.acquire() as conn:
        recorded = await pii_store.recorded_key_check(conn)
        if recorded is not None:
            return recorded == check
        # Any one stored digest the key reproduces shows it is the key (another cannot match
        # by chance); only when none of them match is it refused, so a record edited since
        # (a data fix) does not lock out the right key.
        sample = await pii_store.sample_digested_events(conn, 20)
        if sample and not any(
            vault.digest("event", canonical_text(json.loads(payload))) == digest
            for payload, digest in sample
        ):
            return False
        return await pii_store.claim_key_check(conn, check) == check
