"""Rotating the keys that seal personal data: rotate, reseal, retire (services.pii and the
`screening pii` commands). Each test has a database of its own: a reseal goes over every
stored record, and the session's shared records are sealed under the session's vault."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from screening.api.schemas import validate_event
from screening.protection import (
    PersonalDataError,
    PersonalDataVault,
    SealedValue,
    associated_data,
    field_associated_data,
)
from screening.services import access, pii
from screening.services.ingest import commit_events, prepare
from screening.storage.database import create_pool, migrate
from tests.conftest import close_pool, make_database
from tests.gateway.events import event, resident_id
from tests.gateway.serving import screening, serve_env

SITE = "PII-SITE"
FIELDS = {"document_number": "document_sealed", "name": "name_sealed", "phone": "phone_sealed"}


@pytest.fixture
async def own_database(server_dsn: str) -> AsyncIterator[tuple[str, asyncpg.Pool[Any]]]:
    dsn = await make_database(server_dsn)
    pool = await create_pool(dsn, min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn)
    await access.add_site(pool, SITE, "PII site")
    yield dsn, pool
    await close_pool(pool)


def _sender(i: int, phone: bool) -> dict[str, Any]:
    sender = {
        "document_type": "resident_id",
        "document_number": resident_id(f"110105199001{i % 28 + 1:02d}0{i % 10}2"),
        "name": f"张三{i}",
    }
    if phone:
        sender["phone"] = f"138{i:08d}"
    return sender


async def store_registrations(
    pool: asyncpg.Pool[Any], vault: PersonalDataVault, count: int, site: str = SITE
) -> dict[uuid.UUID, dict[str, Any]]:
    """``count`` real-name registrations ingested as a station's would be (the last one without
    a phone): each record's sender, by its event id."""
    now = datetime.now(UTC)
    context = {"now": now, "max_future_skew_s": 300}
    items = [
        event("realname.registered", site, f"PII{uuid.uuid4().hex[:10].upper()}",
              sender=_sender(i, phone=i < count - 1))
        for i in range(count)
    ]  # fmt: skip
    prepared = [prepare(validate_event(item, context), vault, now) for item in items]
    async with pool.acquire() as conn, conn.transaction():
        await commit_events(conn, prepared, now)
    return {uuid.UUID(item["event_id"]): item["sender"] for item in items}


async def sealed_row(
    pool: asyncpg.Pool[Any], event_id: uuid.UUID, site: str = SITE
) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT * FROM realname_records WHERE site_id = $1 AND event_id = $2", site, event_id
    )
    assert row is not None
    return row


def open_field(
    vault: PersonalDataVault, row: asyncpg.Record, field: str, *, row_bound: bool = False
) -> str | None:
    blob = row[FIELDS[field]]
    if blob is None:
        return None
    record = (row["site_id"], str(row["event_id"]))
    aad = associated_data(*record) if row_bound else field_associated_data(*record, field)
    return vault.open(SealedValue(row["pii_key_id"], bytes(blob)), aad=aad)


async def test_reseal_moves_records_to_the_active_key_and_binds_each_field(
    own_database: tuple[str, asyncpg.Pool[Any]],
) -> None:
    _, pool = own_database
    old = PersonalDataVault.generate("k1")
    senders = await store_registrations(pool, old, 5)
    ids = list(senders)
    legacy, broken = ids[0], ids[1]
    # A record sealed before each field was bound to its column: one associated data per row.
    row = await sealed_row(pool, legacy)
    row_aad = associated_data(SITE, str(legacy))
    await pool.execute(
        "UPDATE realname_records SET document_sealed = $3, name_sealed = $4, phone_sealed = $5"
        " WHERE site_id = $1 AND event_id = $2",
        SITE, legacy,
        *(old.seal(open_field(old, row, f) or "", aad=row_aad).blob for f in FIELDS),
    )  # fmt: skip
    # A record whose name was overwritten: it opens under neither binding.
    garbage = os.urandom(40)
    await pool.execute(
        "UPDATE realname_records SET name_sealed = $3 WHERE site_id = $1 AND event_id = $2",
        SITE, broken, garbage,
    )  # fmt: skip

    new = pii.rotated(old, now=datetime(2026, 11, 29, 6, 0, tzinfo=UTC))
    assert new.active_key_id == "k20261129T060000Z"
    assert new.key_ids == {"k1", "k20261129T060000Z"}
    assert pii.rotated(new, now=datetime(2026, 11, 29, 6, 0, tzinfo=UTC)).active_key_id == (
        "k20261129T060000Z-2"
    )

    report = await pii.reseal(pool, new, batch=2)  # three batches and an empty read
    assert (report.examined, report.resealed, report.current) == (5, 4, 0)
    assert report.unreadable == [(SITE, str(broken))]
    assert report.by_key_before == {"k1": 5}

    for event_id, sender in senders.items():
        row = await sealed_row(pool, event_id)
        if event_id == broken:  # left exactly as it was
            assert (row["pii_key_id"], bytes(row["name_sealed"])) == ("k1", garbage)
            continue
        assert row["pii_key_id"] == new.active_key_id
        for field in FIELDS:
            assert open_field(new, row, field) == sender.get(field)
        # Bound to its column now: swapped into another column, it does not open there.
        with pytest.raises(PersonalDataError):
            new.open(
                SealedValue(row["pii_key_id"], bytes(row["name_sealed"])),
                aad=field_associated_data(SITE, str(event_id), "document_number"),
            )
    with pytest.raises(PersonalDataError):  # the legacy row's old binding is gone
        open_field(new, await sealed_row(pool, legacy), "name", row_bound=True)

    again = await pii.reseal(pool, new)
    assert (again.examined, again.resealed, again.current, len(again.unreadable)) == (5, 0, 4, 1)
    assert again.by_key_before == {"k1": 1, new.active_key_id: 4}
    # Under the active key but bound to its row only (sealed so by an older gateway after the
    # rotation): sealed again all the same.
    row = await sealed_row(pool, ids[2])
    await pool.execute(
        "UPDATE realname_records SET document_sealed = $3, name_sealed = $4, phone_sealed = $5"
        " WHERE site_id = $1 AND event_id = $2",
        SITE, ids[2],
        *(new.seal(open_field(new, row, f) or "", aad=associated_data(SITE, str(ids[2]))).blob
          for f in FIELDS),
    )  # fmt: skip
    third = await pii.reseal(pool, new)
    assert (third.resealed, third.current) == (1, 3)
    assert open_field(new, await sealed_row(pool, ids[2]), "name") == senders[ids[2]]["name"]

    # The old key cannot go while a record still uses it, nor the active key ever.
    with pytest.raises(pii.KeyInUseError, match="1 stored records"):
        await pii.retire(pool, new, "k1")
    with pytest.raises(pii.KeyInUseError, match="active"):
        await pii.retire(pool, new, new.active_key_id)
    with pytest.raises(KeyError):
        await pii.retire(pool, new, "k9")
    await pool.execute(
        "DELETE FROM realname_records WHERE site_id = $1 AND event_id = $2", SITE, broken
    )
    smaller = await pii.retire(pool, new, "k1")
    assert smaller.key_ids == {new.active_key_id}
    assert {k: n for k, (n, _) in (await pii.records_by_key(pool, smaller)).items()} == {
        new.active_key_id: 4
    }
    for event_id, sender in senders.items():
        if event_id != broken:
            row = await sealed_row(pool, event_id)
            assert open_field(smaller, row, "document_number") == sender["document_number"]
    # Matching digests do not depend on the sealing keys: the HMAC key stays.
    number = senders[legacy]["document_number"]
    assert smaller.digest("document", number) == old.digest("document", number)


async def test_pii_commands_rotate_reseal_and_retire_the_key_file(
    own_database: tuple[str, asyncpg.Pool[Any]], tmp_path: Path
) -> None:
    dsn, pool = own_database
    env = serve_env(dsn, tmp_path, 0, pii_keys=False)
    key_file = tmp_path / "pii-keys.json"
    # The keyring is read, never made here: under a mistyped data directory there is none, and
    # nothing is made there (no key file, no lock, no embedded database).
    no_database = {k: v for k, v in env.items() if k != "SCREENING_DATABASE_URL"}
    for command_env, command in ((env, "rotate"), (no_database, "status")):
        rc, out = await screening(command_env, "pii", command)
        assert (rc, "Traceback" in out) == (2, False), out
        assert f"no keyring at {key_file}" in out
        assert os.listdir(tmp_path) == []
    key_file.write_text("[1]")  # JSON, but not a key set: one line, no traceback
    rc, out = await screening(env, "pii", "rotate")
    assert (rc, "Traceback" in out) == (2, False), out
    assert "the key set must be a JSON object" in out
    first = PersonalDataVault.generate("k1")  # as the gateway makes it at its first start
    key_file.write_text(json.dumps(first.to_json_dict()))
    key_file.chmod(0o640)
    if os.geteuid() == 0:  # an operator running the command as root keeps the file's owner
        os.chown(key_file, 4321, 4321)
    rc, out = await screening(env, "pii", "status")
    assert rc == 0, out
    assert f"keyring: {key_file}; database: SCREENING_DATABASE_URL" in out
    assert "k1\tactive\t0 records" in out
    senders = await store_registrations(pool, first, 3)

    rc, out = await screening(env, "pii", "rotate")
    assert rc == 0, out
    assert "screening pii reseal" in out
    rotated = PersonalDataVault.from_json_dict(json.loads(key_file.read_text()))
    assert rotated.key_ids == {"k1", rotated.active_key_id}
    mode = key_file.stat()
    assert stat.S_IMODE(mode.st_mode) == 0o640
    if os.geteuid() == 0:
        assert (mode.st_uid, mode.st_gid) == (4321, 4321)
    assert [name for name in os.listdir(tmp_path) if name.startswith(".pii-keys")] == []

    rc, out = await screening(env, "pii", "retire", "k1")
    assert rc == 2
    assert "3 stored records are sealed under k1" in out
    rc, out = await screening(env, "pii", "status")
    assert "k1\told\t3 records\tlatest received " in out
    assert f"{rotated.active_key_id}\tactive\t0 records" in out

    # A record that no longer opens: named, left alone, and the run ends with status 1.
    broken = next(iter(senders))
    await pool.execute(
        "UPDATE realname_records SET name_sealed = $2 WHERE event_id = $1", broken, b"x" * 40
    )
    rc, out = await screening(env, "pii", "reseal", "--batch", "2")
    assert rc == 1, out
    assert f"3 records examined: 2 sealed again under {rotated.active_key_id}" in out
    assert f"unreadable: site {SITE}, event {broken}" in out
    await pool.execute("DELETE FROM realname_records WHERE event_id = $1", broken)
    rc, out = await screening(env, "pii", "retire", "k1")
    assert rc == 0, out
    final = PersonalDataVault.from_json_dict(json.loads(key_file.read_text()))
    assert final.key_ids == {rotated.active_key_id}
    for event_id, sender in senders.items():
        if event_id != broken:
            row = await sealed_row(pool, event_id)
            assert open_field(final, row, "name") == sender["name"]
    # A record naming a key the keyring does not hold is shown as such.
    await pool.execute("UPDATE realname_records SET pii_key_id = 'k0' WHERE site_id = $1", SITE)
    rc, out = await screening(env, "pii", "status")
    assert rc == 1
    assert "k0\tNOT IN THE KEYRING\t2 records" in out


async def test_keys_kept_in_the_environment_are_printed_or_written_never_the_file(
    own_database: tuple[str, asyncpg.Pool[Any]], tmp_path: Path
) -> None:
    dsn, _ = own_database
    vault = PersonalDataVault.generate("k1")
    env = {**serve_env(dsn, tmp_path, 0, pii_keys=False),
           "SCREENING_PII_KEYS_JSON": json.dumps(vault.to_json_dict())}  # fmt: skip
    rc, out = await screening(env, "pii", "rotate")
    assert rc == 0, out
    (line,) = [line for line in out.splitlines() if line.startswith("{")]
    printed = PersonalDataVault.from_json_dict(json.loads(line))
    assert printed.key_ids == {"k1", printed.active_key_id}
    assert "SCREENING_PII_KEYS_JSON is set" in out
    assert not (tmp_path / "pii-keys.json").exists()

    target = tmp_path / "new-keys.json"
    rc, out = await screening(env, "pii", "rotate", "--out", str(target))
    assert rc == 0, out
    assert not any(line.startswith("{") for line in out.splitlines())
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(PersonalDataVault.from_json_dict(json.loads(target.read_text())).key_ids) == 2
    rc, out = await screening(env, "pii", "rotate", "--out", str(target))
    assert rc == 2
    assert "exists already" in out
    smaller = tmp_path / "without-k1.json"
    env_rotated = {**env, "SCREENING_PII_KEYS_JSON": target.read_text()}
    rc, out = await screening(env_rotated, "pii", "retire", "k1", "--out", str(smaller))
    assert rc == 0, out
    assert "k1" not in PersonalDataVault.from_json_dict(json.loads(smaller.read_text())).key_ids

    # Checked against an embedded database (no SCREENING_DATABASE_URL), every key would look
    # unused: refused. A rotation needs no database, and starts none.
    no_database = {k: v for k, v in env.items() if k != "SCREENING_DATABASE_URL"}
    rc, out = await screening(no_database, "pii", "rotate")
    assert rc == 0, out
    assert out.count('"keys":') == 1
    assert "pgdata" not in os.listdir(tmp_path)
    for command in (("retire", "k1"), ("reseal",), ("status",)):
        rc, out = await screening(no_database, "pii", *command)
        assert rc == 2, out
        assert "SCREENING_DATABASE_URL is not set" in out
    # --out is only for keys kept in the environment.
    file_env = serve_env(dsn, tmp_path, 0, pii_keys=False)
    rc, out = await screening(file_env, "pii", "rotate", "--out", str(tmp_path / "x.json"))
    assert rc == 2
    assert "--out is for keys kept in SCREENING_PII_KEYS_JSON" in out


async def test_reseal_pages_over_sites_and_skips_records_without_sealed_fields(
    own_database: tuple[str, asyncpg.Pool[Any]],
) -> None:
    _, pool = own_database
    old = PersonalDataVault.generate("k1")
    other = "PII-OTHER"
    await access.add_site(pool, other, "second site")
    await access.add_contract(
        pool, SITE, "C-PII", name="某电商公司", uscc="91420100MA4K00001U",
        agreement_no="SA-PII", valid_from=date(2026, 1, 1),
    )  # fmt: skip
    here = await store_registrations(pool, old, 3)
    there = await store_registrations(pool, old, 3, site=other)
    # A contract customer's registration seals nothing: no key, nothing to reseal.
    now = datetime.now(UTC)
    contract = event("realname.registered", SITE, "PIICONTRACT01", contract_customer_ref="C-PII")
    prepared = prepare(validate_event(contract, {"now": now, "max_future_skew_s": 300}), old, now)
    async with pool.acquire() as conn, conn.transaction():
        await commit_events(conn, [prepared], now)

    new = pii.rotated(old)
    report = await pii.reseal(pool, new, batch=4)  # the first page ends inside a site
    assert (report.examined, report.resealed, report.unreadable) == (6, 6, [])
    for site, senders in ((SITE, here), (other, there)):
        for event_id, sender in senders.items():
            row = await sealed_row(pool, event_id, site)
            assert row["pii_key_id"] == new.active_key_id
            assert open_field(new, row, "phone") == sender.get("phone")
    keyless = await pool.fetchrow(
        "SELECT pii_key_id, document_sealed FROM realname_records WHERE event_id = $1",
        uuid.UUID(contract["event_id"]),
    )
    assert keyless is not None
    assert (keyless["pii_key_id"], keyless["document_sealed"]) == (None, None)


async def test_the_first_key_check_on_a_database_with_records_tests_the_key_on_them(
    own_database: tuple[str, asyncpg.Pool[Any]],
) -> None:
    """A database that holds events from before the key check: the first gateway to start
    records its key only if that key reproduces their digests, so a misconfigured gateway that
    starts first cannot lock out the ones with the right keys."""
    _, pool = own_database
    right = PersonalDataVault.generate("k1")
    now = datetime.now(UTC)
    context = {"now": now, "max_future_skew_s": 300}
    items = [event("parcel.sealed", SITE, f"PIIK{i:08d}", clerk_id="c1") for i in range(4)]
    prepared = [prepare(validate_event(item, context), right, now) for item in items]
    async with pool.acquire() as conn, conn.transaction():
        await commit_events(conn, prepared, now)

    wrong = PersonalDataVault.generate("k1")
    assert await pii.keys_match(pool, wrong) is False
    assert await pool.fetchval("SELECT count(*) FROM pii_key_check") == 0  # nothing recorded
    # A record edited since (a data fix) does not lock out the right key: one match suffices.
    await pool.execute(
        "UPDATE events SET payload = jsonb_set(payload, '{clerk_id}', '\"c9\"')"
        " WHERE site_id = $1 AND waybill_no = 'PIIK00000000'",
        SITE,
    )
    assert await pii.keys_match(pool, right) is True
    assert await pii.keys_match(pool, right.rotated("k2")) is True  # sealing keys rotate
    assert await pii.keys_match(pool, wrong) is False  # now against the recorded check


async def test_gateways_that_check_their_keys_together_agree(
    own_database: tuple[str, asyncpg.Pool[Any]],
) -> None:
    """Two starts at once on a database with no check yet: one records it, and the other,
    with the same keys, must read that record, not see nothing and refuse."""
    _, pool = own_database
    keys = PersonalDataVault.generate("k1")
    assert await asyncio.gather(*(pii.keys_match(pool, keys) for _ in range(8))) == [True] * 8
