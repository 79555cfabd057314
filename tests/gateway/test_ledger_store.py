"""The per-site ledger against a real PostgreSQL: appends, proofs, checkpoints, and tampering done
directly in SQL that verification must name."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from screening.domain.checkpoint import parse_and_verify
from screening.domain.ledger import (
    DuplicateEntryError,
    LeafNotFoundError,
    LedgerInconsistentError,
    ProofRequestError,
    Swap,
    consistency_proof,
    event_entry,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    verify_consistency,
    verify_inclusion,
)
from screening.services import ledger as ledger_service
from screening.services.ledger import LedgerSigner, SignerKeyError
from screening.storage import ledger as store
from screening.storage.database import create_pool, migrate
from tests.conftest import close_pool, make_database

SITE = "S-LEDGER"
OTHER = "S-OTHER"
T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
TYPES = ["parcel.received", "realname.registered", "inspection.completed", "parcel.sealed"]

INSERT_SITE = "INSERT INTO sites (site_id, name) VALUES ($1, $1)"
INSERT_EVENT = """
INSERT INTO events (site_id, event_id, event_type, waybill_no, occurred_at, received_at,
                    payload, payload_digest)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)
"""


@dataclass
class Ledger:
    pool: asyncpg.Pool[Any]
    signer: LedgerSigner
    ids: list[uuid.UUID]  # event ids in log order


async def insert_events(conn: Any, site: str, count: int, start: int = 0) -> list[uuid.UUID]:
    ids = []
    for k in range(start, start + count):
        event_id = uuid.uuid4()
        payload = {"waybill_no": f"WB{k // 4:010d}", "result": "pass", "score": 0.00001 * k}
        await conn.execute(
            INSERT_EVENT,
            site,
            event_id,
            TYPES[k % 4],
            f"WB{k // 4:010d}",
            T0 + timedelta(minutes=k),
            T0 + timedelta(minutes=k, seconds=3),
            json.dumps(payload),
            os.urandom(32),
        )
        ids.append(event_id)
    return ids


async def fresh_pool(server_dsn: str) -> asyncpg.Pool[Any]:
    pool = await create_pool(await make_database(server_dsn), min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await migrate(conn)
        await conn.execute(INSERT_SITE, SITE)
        await conn.execute(INSERT_SITE, OTHER)
    return pool


async def stored_leaf_hashes(conn: Any, site: str) -> list[bytes]:
    rows = await conn.fetch(
        "SELECT leaf_hash FROM ledger_leaves WHERE site_id = $1 ORDER BY leaf_index", site
    )
    return [bytes(r[0]) for r in rows]


@pytest.fixture(scope="module")
async def ledger(
    server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ledger]:
    """A site with 600 logged events (two full 256-leaf tiles) and a checkpoint over them."""
    pool = await fresh_pool(server_dsn)
    ids: list[uuid.UUID] = []
    for batch in (5, 1, 250, 344):  # uneven ingest groups
        async with pool.acquire() as conn, conn.transaction():
            new = await insert_events(conn, SITE, batch, start=len(ids))
            result = await store.append_events(conn, SITE, new)
            assert result.first_index == len(ids)
            assert result.tree_size == len(ids) + batch
        ids += new
    signer = LedgerSigner.load_or_create(tmp_path_factory.mktemp("key") / "ledger.key")
    await ledger_service.make_checkpoint(pool, SITE, signer)
    try:
        yield Ledger(pool, signer, ids)
    finally:
        await close_pool(pool)


async def note(ledger: Ledger) -> str:
    async with ledger.pool.acquire() as conn:
        stored = await store.latest_checkpoint(conn, SITE)
    assert stored is not None
    return stored.note


# --- appends, roots and proofs ---------------------------------------------------------------


async def test_the_stored_root_is_the_rfc_tree_hash_of_the_events(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        events = await store.load_ledger_events(conn, SITE, ledger.ids)
        head = await store.latest_root(conn, SITE)
        leaves = await stored_leaf_hashes(conn, SITE)
        nodes = await conn.fetchval("SELECT count(*) FROM ledger_nodes WHERE site_id = $1", SITE)
        state = await store.ledger_state(conn, SITE)
    expected = [leaf_hash(event_entry(e)) for e in events]
    assert leaves == expected
    assert head.tree_size == 600
    assert head.root_hash == merkle_root(expected)
    assert nodes == 2  # the two completed 256-leaf subtrees
    assert len(state.hashes) == bin(600).count("1")


async def test_proofs_from_the_store_are_the_rfc_proofs_and_verify(ledger: Ledger) -> None:
    async with ledger.pool.acquire() as conn:
        leaves = await stored_leaf_hashes(conn, SITE)
        for size in (1, 7, 256, 257, 511, 512, 513, 600):
            root = await store.root_at(conn, SITE, size)
            assert root == merkle_root(leaves[:size])
            for index in {0, size // 3, size - 1}:
                proof = await store.inclusion_proof(conn, SITE, index, size)
                assert proof == inclusion_proof(leaves, index, size)
                assert verify_inclusion(leaves[index], index, size, proof, root)
            for old in (1, 5, 255, 256, 300):
                if old <= size:
                    proof = await store.consistency_proof(conn, SITE, old, size)
                    assert proof == consistency_proof(leaves, old, size)
                    old_root = merkle_root(leaves[:old])
                    assert verify_consistency(old, size, old_root, root, proof)
        leaf = await store.find_leaf(conn, SITE, ledger.ids[42])
        assert leaf is not None
        assert (leaf.leaf_index, leaf.leaf_hash) == (42, leaves[42])
        with pytest.raises(ProofRequestError):
            await store.inclusion_proof(conn, SITE, 0, 601)
        with pytest.raises(ProofRequestError):
            await store.consistency_proof(conn, SITE, 10, 601)


async def test_concurrent_first_appends_to_a_site_serialise(server_dsn: str) -> None:
    pool = await fresh_pool(server_dsn)
    try:

        async def append(count: int) -> store.AppendResult:
            async with pool.acquire() as conn, conn.transaction():
                ids = await insert_events(conn, OTHER, count, start=count * 100)
                await asyncio.sleep(0)  # let the other transaction reach its append
                return await store.append_events(conn, OTHER, ids)

        results = await asyncio.gather(*(append(n) for n in (3, 4, 5, 6)))
        ranges = sorted((r.first_index, r.tree_size) for r in results)
        assert [a for a, _ in ranges] == [0, *(b for _, b in ranges[:-1])]  # dense, no overlap
        async with pool.acquire() as conn:
            head = await store.latest_root(conn, OTHER)
            assert head.tree_size == 18
            assert head.root_hash == merkle_root(await stored_leaf_hashes(conn, OTHER))
            # An event is logged once: a second append of it fails the transaction.
            leaf = await store.leaf_at(conn, OTHER, 0)
            assert leaf is not None
            with pytest.raises(DuplicateEntryError):
                async with conn.transaction():
                    await store.append_events(conn, OTHER, [leaf.event_id])
            with pytest.raises(DuplicateEntryError):
                await store.append_entries(
                    conn, OTHER, [(leaf.event_id, b"x"), (leaf.event_id, b"y")]
                )
            assert (await store.latest_root(conn, OTHER)).tree_size == 18
    finally:
        await close_pool(pool)


# --- appends that name the state they extend (LedgerTips) ------------------------------------


@pytest.fixture
async def pool(server_dsn: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    """A fresh migrated database with both sites and no log yet."""
    pool = await fresh_pool(server_dsn)
    try:
        yield pool
    finally:
        await close_pool(pool)


def entries(count: int) -> list[tuple[uuid.UUID, bytes]]:
    return [(uuid.uuid4(), os.urandom(40)) for _ in range(count)]


@dataclass(eq=False)  # hashable: asyncpg keeps its query loggers in a set
class Statements:
    """The append statements one connection ran. asyncpg calls its query loggers through
    call_soon: a statement is counted by the time the transaction's COMMIT has come back."""

    sql: list[str] = dataclasses.field(default_factory=list)

    def __call__(self, record: Any) -> None:
        self.sql.append(record.query)

    def take(self) -> tuple[int, int, int]:
        """(locked reads, guessed appends, plain appends) since the last take."""
        taken, self.sql = self.sql, []
        count = taken.count
        return count(store.LOCK_STATE), count(store.WRITE_APPEND_AT), count(store.WRITE_APPEND)


async def append_with(
    pool: asyncpg.Pool[Any], tips: store.LedgerTips | None, items: list[tuple[uuid.UUID, bytes]],
    seen: Statements | None = None,
) -> store.AppendResult:  # fmt: skip
    async with pool.acquire() as conn:
        if seen is not None:
            conn.add_query_logger(seen)
        try:
            async with conn.transaction():
                return await store.append_entries(conn, OTHER, items, tips)
        finally:
            if seen is not None:
                conn.remove_query_logger(seen)


async def check_log(
    pool: asyncpg.Pool[Any], appended: list[tuple[uuid.UUID, bytes]], site: str = OTHER
) -> None:
    """The site's log holds exactly ``appended``'s leaves, in order; its stored head and
    frontier are those of that tree; and the tile nodes the appends stored give the roots of
    its earlier sizes."""
    hashes = [leaf_hash(entry) for _, entry in appended]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT leaf_index, event_id, leaf_hash FROM ledger_leaves WHERE site_id = $1 "
            "ORDER BY leaf_index", site,
        )  # fmt: skip
        assert [r["leaf_index"] for r in rows] == list(range(len(appended)))
        assert [(r["event_id"], bytes(r["leaf_hash"])) for r in rows] == [
            (event_id, h) for (event_id, _), h in zip(appended, hashes, strict=True)
        ]
        head = await store.latest_root(conn, site)
        assert head == store.TreeHead(len(appended), merkle_root(hashes))
        assert (await store.ledger_state(conn, site)).root() == head.root_hash
        for size in {1, 255, 256, 257, 300, 511, len(appended)}:
            if size <= len(appended):  # read from stored tile nodes where the size spans them
                assert await store.root_at(conn, site, size) == merkle_root(hashes[:size])


async def test_appends_with_tips_take_one_statement_and_write_the_same_log(
    pool: asyncpg.Pool[Any],
) -> None:
    tips, seen, appended = store.LedgerTips(), Statements(), []
    # The first append creates the log (a read, the insert, a read again, the write); from
    # then on each append names the state it extends and writes in one statement. 300
    # leaves complete tile nodes.
    for count, expected in ((3, (2, 0, 1)), (1, (0, 1, 0)), (300, (0, 1, 0)), (7, (0, 1, 0))):
        items = entries(count)
        result = await append_with(pool, tips, items, seen)
        assert (result.first_index, result.tree_size) == (len(appended), len(appended) + count)
        appended += items
        assert seen.take() == expected
    await check_log(pool, appended)


async def test_a_tip_another_writer_outdated_costs_no_more_than_none(
    pool: asyncpg.Pool[Any],
) -> None:
    ours, theirs, seen, appended = store.LedgerTips(), store.LedgerTips(), Statements(), []

    async def append(tips: store.LedgerTips) -> tuple[int, int, int]:
        nonlocal appended
        appended += (items := entries(3))
        result = await append_with(pool, tips, items, seen)
        assert (result.first_index, result.tree_size) == (
            len(appended) - len(items), len(appended),
        )  # fmt: skip
        return seen.take()

    await append(ours)
    # Two processes appending in turn: each finds the log where the other left it. A wrong
    # guess locked and read the state and wrote nothing, and the write followed it: two round
    # trips, as without a tip. After it, that process reads first (no guess to hash and send
    # twice) for as long as it finds the log moved by the other.
    turns = [await append(tips) for _ in range(3) for tips in (theirs, ours)]
    assert turns == [
        (1, 0, 1),  # theirs: its first append
        (0, 1, 1),  # ours: a wrong guess
        (0, 1, 1),  # theirs: a wrong guess
        (1, 0, 1),  # from here on each reads, then writes
        (1, 0, 1),
        (1, 0, 1),
    ]
    # Alone again: a read finds the log where this process left it, and it guesses again.
    assert [await append(ours), await append(ours)] == [(1, 0, 1), (0, 1, 0)]
    await check_log(pool, appended)


async def test_a_tip_from_an_append_rolled_back_writes_on_the_state_found(
    pool: asyncpg.Pool[Any],
) -> None:
    tips, seen, appended = store.LedgerTips(), Statements(), []
    appended += (items := entries(2))
    await append_with(pool, tips, items)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await store.append_entries(conn, OTHER, entries(6), tips)
        await tx.rollback()
    tip = tips.guess(OTHER)
    assert tip is not None
    assert tip[0].size == 8  # a state that never landed
    appended += (items := entries(1))
    result = await append_with(pool, tips, items, seen)
    assert (result.first_index, result.tree_size) == (2, 3)
    assert seen.take() == (0, 1, 1)
    await check_log(pool, appended)


@pytest.mark.parametrize("first_commits", [True, False])
async def test_an_append_chained_on_one_in_flight_waits_for_its_end(
    pool: asyncpg.Pool[Any], first_commits: bool
) -> None:
    tips, seen, appended = store.LedgerTips(), Statements(), []
    appended += (items := entries(2))
    await append_with(pool, tips, items)
    first, second = entries(3), entries(2)
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await store.append_entries(conn, OTHER, first, tips)  # holds the state row
        chained = asyncio.create_task(append_with(pool, tips, second, seen))
        # Sent, and waiting in the database for the first to end (asked from outside any
        # transaction: one sees pg_stat_activity as it was at its first look).
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        for _ in range(200):
            if await pool.fetchval(waiting):
                break
            await asyncio.sleep(0.01)
        assert await pool.fetchval(waiting) == 1
        assert not chained.done()
        await (tx.commit() if first_commits else tx.rollback())
    result = await chained
    if first_commits:
        appended += first
        assert seen.take() == (0, 1, 0)  # written in the one statement, on the new state
    else:
        assert seen.take() == (0, 1, 1)  # that state never landed: written on the one found
    assert (result.first_index, result.tree_size) == (len(appended), len(appended) + 2)
    appended += second
    await check_log(pool, appended)


async def test_a_tip_for_a_first_append_rolled_back_creates_the_log_again(
    pool: asyncpg.Pool[Any],
) -> None:
    tips, seen = store.LedgerTips(), Statements()
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await store.append_entries(conn, OTHER, entries(3), tips)  # creates the state row
        await tx.rollback()
    assert tips.guess(OTHER) is not None
    appended = entries(2)
    result = await append_with(pool, tips, appended, seen)
    assert (result.first_index, result.tree_size) == (0, 2)
    assert seen.take() == (2, 1, 1)  # no row to lock: created, locked, written
    await check_log(pool, appended)


async def test_appends_with_tips_over_several_sites_each_take_one_statement(
    pool: asyncpg.Pool[Any],
) -> None:
    tips, seen = store.LedgerTips(), Statements()
    logs: dict[str, list[tuple[uuid.UUID, bytes]]] = {SITE: [], OTHER: []}
    for expected in ((4, 0, 2), (0, 2, 0), (0, 2, 0)):
        group = {site: entries(k) for k, site in enumerate((OTHER, SITE), start=2)}
        async with pool.acquire() as conn:
            conn.add_query_logger(seen)
            async with conn.transaction():
                results = await store.append_stored(
                    conn,
                    [(site, event_id, entry) for site, items in group.items()
                     for event_id, entry in items],
                    tips,
                )  # fmt: skip
            conn.remove_query_logger(seen)
        assert seen.take() == expected
        for site, items in group.items():
            assert results[site].first_index == len(logs[site])
            logs[site] += items
    for site, appended in logs.items():
        await check_log(pool, appended, site)


async def test_an_event_already_logged_fails_a_guessed_append_and_drops_the_tip(
    pool: asyncpg.Pool[Any],
) -> None:
    tips, seen, appended = store.LedgerTips(), Statements(), []
    for _ in range(2):
        appended += (items := entries(2))
        await append_with(pool, tips, items)
    with pytest.raises(DuplicateEntryError):
        await append_with(pool, tips, [appended[0]])
    assert tips.left_at(OTHER) is None
    appended += (items := entries(1))
    await append_with(pool, tips, items, seen)
    assert seen.take() == (1, 0, 1)
    await check_log(pool, appended)


# --- checkpoints ------------------------------------------------------------------------------


async def test_the_fixture_checkpoint_covers_the_whole_log(ledger: Ledger) -> None:
    checkpoint = parse_and_verify(await note(ledger), ledger.signer.verifier())
    assert (checkpoint.origin, checkpoint.tree_size) == ("screening.example/sites/S-LEDGER", 600)
    async with ledger.pool.acquire() as conn:
        assert checkpoint.root_hash == (await store.latest_root(conn, SITE)).root_hash


async def test_checkpoints_only_ever_extend_what_was_signed(
    server_dsn: str, tmp_path: Path
) -> None:
    pool = await fresh_pool(server_dsn)
    signer = LedgerSigner.load_or_create(tmp_path / "ledger.key")
    verifier = signer.verifier()

    async def grow(count: int, start: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await store.append_events(conn, SITE, await insert_events(conn, SITE, count, start))

    try:
        assert await ledger_service.checkpoint_all(pool, signer) == {}  # no log yet
        empty = await ledger_service.make_checkpoint(pool, SITE, signer)
        assert parse_and_verify(empty, verifier).tree_size == 0
        await grow(10, 0)
        first = await ledger_service.make_checkpoint(pool, SITE, signer)
        assert parse_and_verify(first, verifier).tree_size == 10
        # Nothing appended since: the same note comes back.
        assert await ledger_service.make_checkpoint(pool, SITE, signer) == first
        await grow(1, 10)
        signed = await ledger_service.checkpoint_all(pool, signer)
        assert list(signed) == [SITE]
        second = signed[SITE]
        assert parse_and_verify(second, verifier).tree_size == 11
        async with pool.acquire() as conn:
            assert (await store.latest_checkpoint(conn, SITE)).note == second  # type: ignore[union-attr]
            # A rewritten leaf below the last checkpoint: the log no longer extends it.
            await conn.execute(
                "UPDATE ledger_leaves SET leaf_hash = $2 WHERE site_id = $1 AND leaf_index = 4",
                SITE,
                bytes(32),
            )
            cp = parse_and_verify(second, verifier)
            forged = dataclasses.replace(cp, root_hash=bytes(32))
            with pytest.raises(LedgerInconsistentError):  # a second root at one size
                await store.save_checkpoint(conn, SITE, forged, "forged")
        await grow(5, 11)
        with pytest.raises(LedgerInconsistentError):
            await ledger_service.make_checkpoint(pool, SITE, signer)
    finally:
        await close_pool(pool)


async def test_route_proofs_verify_against_the_signed_checkpoint(ledger: Ledger) -> None:
    verifier = ledger.signer.verifier()
    latest = await ledger_service.latest_checkpoint(ledger.pool, SITE)
    assert latest is not None
    checkpoint = parse_and_verify(latest, verifier)
    proof = await ledger_service.prove_inclusion(ledger.pool, SITE, ledger.ids[123])
    assert proof.checkpoint == latest
    assert (proof.leaf_index, proof.tree_size) == (123, checkpoint.tree_size)
    assert verify_inclusion(
        proof.leaf_hash, proof.leaf_index, proof.tree_size, list(proof.hashes), checkpoint.root_hash
    )
    older = await ledger_service.prove_inclusion(ledger.pool, SITE, ledger.ids[3], tree_size=6)
    assert older.checkpoint is None
    assert len(older.hashes) == 3
    with pytest.raises(LeafNotFoundError):
        await ledger_service.prove_inclusion(ledger.pool, SITE, uuid.uuid4())
    with pytest.raises(ProofRequestError):
        await ledger_service.prove_inclusion(ledger.pool, SITE, ledger.ids[300], tree_size=300)
    consistency = await ledger_service.prove_consistency(ledger.pool, SITE, 100)
    async with ledger.pool.acquire() as conn:
        old_root = await store.root_at(conn, SITE, 100)
    assert verify_consistency(
        100, consistency.new_size, old_root, checkpoint.root_hash, list(consistency.hashes)
    )


def test_the_signing_key_file_is_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "ledger.key"
    signer = LedgerSigner.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert LedgerSigner.load_or_create(path).vkey() == signer.vkey()
    assert signer.vkey().startswith("screening.example/ledger+")
    path.chmod(0o640)  # a group may read it (a service's secret handed over as root:group)
    assert LedgerSigner.load(path).vkey() == signer.vkey()
    path.chmod(0o644)  # every local user could sign any site's history with it: refused
    with pytest.raises(SignerKeyError, match="open to every user"):
        LedgerSigner.load(path)


# --- verification and tampering -------------------------------------------------------------


async def verify_after(ledger: Ledger, *statements: tuple[str, list[Any]]) -> Any:
    """Tamper inside a transaction, verify inside it, roll it back."""
    checkpoint = parse_and_verify(await note(ledger), ledger.signer.verifier())
    async with ledger.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            for sql, args in statements:
                await conn.execute(sql, *args)
            return await store.verify_site(
                conn, SITE, checkpoint, expected_origin="screening.example/sites/S-LEDGER"
            )
        finally:
            await tx.rollback()


async def test_an_untouched_site_verifies_clean(ledger: Ledger) -> None:
    report = await ledger_service.verify(
        ledger.pool, SITE, await note(ledger), ledger.signer.verifier()
    )
    assert report.ok, report
    assert report.beyond_checkpoint == 0
    assert report.short_of_checkpoint == 0


async def test_an_altered_digest_or_waybill_is_named(ledger: Ledger) -> None:
    a, b, c = ledger.ids[3], ledger.ids[300], ledger.ids[599]
    report = await verify_after(
        ledger,
        (
            "UPDATE events SET payload_digest = $2 WHERE site_id = $1 AND event_id = $3",
            [SITE, bytes(32), a],
        ),
        (
            "UPDATE events SET waybill_no = 'WB9999999999' WHERE site_id = $1 AND event_id = $2",
            [SITE, b],
        ),
        (
            "UPDATE events SET payload = jsonb_set(payload, '{result}', '\"refused\"')"
            " WHERE site_id = $1 AND event_id = $2",
            [SITE, c],
        ),
    )
    assert {(f.leaf_index, f.event_id) for f in report.altered} == {(3, a), (300, b), (599, c)}
    assert not report.removed
    assert not report.reordered
    assert not report.entries_match_checkpoint
    assert report.leaves_match_checkpoint  # the ledger's own leaves are intact
    assert not report.ok


async def test_a_removed_record_is_named(ledger: Ledger) -> None:
    gone = ledger.ids[77]
    report = await verify_after(
        ledger, ("DELETE FROM events WHERE site_id = $1 AND event_id = $2", [SITE, gone])
    )
    assert [(f.leaf_index, f.event_id) for f in report.removed] == [(77, gone)]
    assert not report.altered
    assert not report.entries_match_checkpoint
    assert not report.ok


async def test_swapped_event_times_are_named_as_reordered(ledger: Ledger) -> None:
    # The classic cover-up: make the seal look earlier than the inspection, or vice versa.
    inspection, seal = ledger.ids[10], ledger.ids[11]
    report = await verify_after(
        ledger,
        (
            "UPDATE events e SET occurred_at = o.occurred_at FROM events o"
            " WHERE e.site_id = $1 AND o.site_id = $1"
            " AND ((e.event_id = $2 AND o.event_id = $3) OR (e.event_id = $3 AND o.event_id = $2))",
            [SITE, inspection, seal],
        ),
    )
    assert {(f.leaf_index, f.logged_as, f.swapped) for f in report.reordered} == {
        (10, 11, Swap.OCCURRED_AT),
        (11, 10, Swap.OCCURRED_AT),
    }
    assert not report.altered
    assert not report.ok


async def test_swapped_event_ids_are_named_as_reordered(ledger: Ledger) -> None:
    x, y = ledger.ids[20], ledger.ids[400]
    tmp = uuid.uuid4()
    sql = "UPDATE events SET event_id = $3 WHERE site_id = $1 AND event_id = $2"
    report = await verify_after(
        ledger, (sql, [SITE, x, tmp]), (sql, [SITE, y, x]), (sql, [SITE, tmp, y])
    )
    assert {(f.leaf_index, f.event_id, f.logged_as, f.swapped) for f in report.reordered} == {
        (20, x, 400, Swap.IDENTITY),
        (400, y, 20, Swap.IDENTITY),
    }
    assert not report.altered
    assert not report.ok


async def test_rewritten_leaves_fail_against_the_checkpoint(ledger: Ledger) -> None:
    # Rewriting a leaf to match an altered record: the records agree with the leaves, but not
    # with the signed root.
    target = ledger.ids[5]
    async with ledger.pool.acquire() as conn:
        (event,) = await store.load_ledger_events(conn, SITE, [target])
    forged = leaf_hash(event_entry(dataclasses.replace(event, waybill_no="WBFORGED")))
    report = await verify_after(
        ledger,
        (
            "UPDATE events SET waybill_no = 'WBFORGED' WHERE site_id = $1 AND event_id = $2",
            [SITE, target],
        ),
        (
            "UPDATE ledger_leaves SET leaf_hash = $2 WHERE site_id = $1 AND leaf_index = 5",
            [SITE, forged],
        ),
    )
    assert not report.altered
    assert not report.leaves_match_checkpoint
    assert not report.entries_match_checkpoint
    assert not report.state_matches_leaves
    assert not report.ok


async def test_a_stored_head_root_that_is_not_the_frontiers_fails_verification(
    ledger: Ledger,
) -> None:
    """Found by review: checkpoints are signed from ledger_state.root_hash, but verify only
    compared the stored frontier with the leaves; a head root set apart from it passed."""
    report = await verify_after(
        ledger, ("UPDATE ledger_state SET root_hash = $2 WHERE site_id = $1", [SITE, bytes(32)])
    )
    assert report.leaves_match_checkpoint  # the leaves themselves are intact
    assert not report.state_matches_leaves
    assert not report.ok


async def test_reordered_leaves_fail_against_the_checkpoint(ledger: Ledger) -> None:
    move = "UPDATE ledger_leaves SET leaf_index = $3 WHERE site_id = $1 AND leaf_index = $2"
    report = await verify_after(
        ledger, (move, [SITE, 8, 10**6]), (move, [SITE, 9, 8]), (move, [SITE, 10**6, 9])
    )
    assert not report.leaves_match_checkpoint
    assert not report.entries_match_checkpoint
    assert not report.ok


async def test_truncation_and_unlogged_events_are_reported(ledger: Ledger) -> None:
    stray = uuid.uuid4()
    report = await verify_after(
        ledger,
        ("DELETE FROM ledger_leaves WHERE site_id = $1 AND leaf_index >= 590", [SITE]),
        (
            INSERT_EVENT,
            [SITE, stray, "parcel.sealed", "WBSTRAY", T0, T0, "{}", bytes(32)],
        ),
    )
    assert report.short_of_checkpoint == 10
    assert {f.event_id for f in report.unlogged} == {stray, *ledger.ids[590:600]}
    assert not report.ok


async def test_leaves_beyond_the_checkpoint_are_counted_and_a_foreign_checkpoint_refused(
    ledger: Ledger,
) -> None:
    checkpoint = parse_and_verify(await note(ledger), ledger.signer.verifier())
    async with ledger.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            new = await insert_events(conn, SITE, 3, start=20_000)
            await store.append_events(conn, SITE, new)
            report = await store.verify_site(conn, SITE, checkpoint)
            assert report.beyond_checkpoint == 3
            assert report.ok
            foreign = await store.verify_site(
                conn, SITE, checkpoint, expected_origin="screening.example/sites/S-OTHER"
            )
            assert not foreign.origin_matches
            assert not foreign.ok
        finally:
            await tx.rollback()


async def test_a_checkpoint_signed_by_another_gateway_meanwhile_is_no_false_alarm(
    server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gateways sign checkpoints: while one reads the log, the log grows and the other
    signs it. The first must not take that newer checkpoint for a log that stopped extending
    it (a tamper alarm)."""
    pool = await fresh_pool(server_dsn)
    signer = LedgerSigner.load_or_create(tmp_path / "ledger.key")
    reads = 0
    real_root, real_checkpoint = store.latest_root, store.latest_checkpoint

    async def other_gateway_meanwhile() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await store.append_events(conn, SITE, await insert_events(conn, SITE, 2, 3))
        monkeypatch.setattr(store, "latest_root", real_root)
        monkeypatch.setattr(store, "latest_checkpoint", real_checkpoint)
        await ledger_service.make_checkpoint(pool, SITE, signer)

    def between_the_reads(real: Any) -> Any:
        async def read(conn: Any, site_id: str) -> Any:
            nonlocal reads
            reads += 1
            if reads == 2:  # after this gateway's first read, before its second
                await other_gateway_meanwhile()
            return await real(conn, site_id)

        return read

    try:
        async with pool.acquire() as conn, conn.transaction():
            await store.append_events(conn, SITE, await insert_events(conn, SITE, 3, 0))
        await ledger_service.make_checkpoint(pool, SITE, signer)
        async with pool.acquire() as conn, conn.transaction():
            await store.append_events(conn, SITE, await insert_events(conn, SITE, 1, 5))
        monkeypatch.setattr(store, "latest_root", between_the_reads(real_root))
        monkeypatch.setattr(store, "latest_checkpoint", between_the_reads(real_checkpoint))
        signed = await ledger_service.make_checkpoint(pool, SITE, signer)  # no alarm
        assert parse_and_verify(signed, signer.verifier()).tree_size == 6
    finally:
        await close_pool(pool)


async def test_one_sites_unforeseen_failure_does_not_stop_the_others_checkpoints(
    server_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = await fresh_pool(server_dsn)
    signer = LedgerSigner.load_or_create(tmp_path / "ledger.key")
    real = ledger_service.make_checkpoint

    async def failing_for_one(pool_: Any, site_id: str, *args: Any, **kw: Any) -> str:
        if site_id == SITE:
            raise RuntimeError("something nobody foresaw")
        return await real(pool_, site_id, *args, **kw)

    try:
        for site in (SITE, OTHER):
            async with pool.acquire() as conn, conn.transaction():
                await store.append_events(conn, site, await insert_events(conn, site, 2))
        monkeypatch.setattr(ledger_service, "make_checkpoint", failing_for_one)
        signed = await ledger_service.checkpoint_all(pool, signer)
        assert list(signed) == [OTHER]
    finally:
        await close_pool(pool)
