"""Migrations under concurrent starts, and nothing half-written when the database fails."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from pydantic import ValidationError

from screening.api.context import GATEWAY
from screening.api.schemas import EVENT_ADAPTER
from screening.app import create_app
from screening.domain.ledger import merkle_root
from screening.domain.records import PreparedEvent
from screening.errors import BadRequestError
from screening.protection import PersonalDataVault
from screening.services import access
from screening.services.ingest import GroupCommitWriter, Outcome, prepare, reevaluate_parcels
from screening.settings import Settings
from screening.storage import ledger as ledger_store
from screening.storage import parcels as parcel_store
from screening.storage.database import (
    EMBEDDED_SETTINGS,
    create_pool,
    load_migrations,
    migrate,
    shared_buffers_for,
)
from screening.storage.errors import DatabaseUnavailableError, UnstorableEventError
from screening.storage.parcels import ROLLUP_STRIPES
from tests.conftest import bounded_cleanup, close_pool, make_database, make_keys, start_gateway
from tests.gateway.events import BASE, parcel_flow


@contextlib.asynccontextmanager
async def writer_on_fresh_database(
    server_dsn: str, pool_size: int, **writer_options: Any
) -> AsyncIterator[tuple[asyncpg.Pool[Any], GroupCommitWriter, Any]]:
    """A migrated database with keys, a pool of ``pool_size`` and a group-commit writer on it
    (not started); closed after the test."""
    dsn = await make_database(server_dsn)
    pool: asyncpg.Pool[Any] = await create_pool(dsn, min_size=1, max_size=pool_size)
    writer = GroupCommitWriter(pool, **writer_options)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield pool, writer, await make_keys(pool)
    finally:
        await writer.close()
        await close_pool(pool)


async def test_two_gateways_migrating_at_once_apply_each_migration_once(server_dsn: str) -> None:
    dsn = await make_database(server_dsn)
    conns = [await asyncpg.connect(dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = [name for names in results for name in names]
        assert sorted(applied) == sorted(m.name for m in load_migrations())
        rows = await conns[0].fetch("SELECT version FROM schema_migrations")
        assert len(rows) == len(load_migrations())
        assert await migrate(conns[0]) == []  # idempotent
    finally:
        for c in conns:
            await c.close()


async def test_two_gateways_starting_at_once_on_a_fresh_database_migrate_it_once(
    server_dsn: str, tmp_path: Path, vault: PersonalDataVault
) -> None:
    """Two gateways (each its own pool, as two hosts would be) start together on an empty
    database: each migration is applied once, under the advisory lock, and both serve."""
    dsn = await make_database(server_dsn)
    settings = Settings(data_dir=tmp_path, database_url=dsn, pool_min_size=1, pool_max_size=5)
    runners = [web.AppRunner(create_app(settings, vault=vault)) for _ in range(2)]
    try:
        await asyncio.gather(*(r.setup() for r in runners))
        conn = await asyncpg.connect(dsn)
        try:
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        finally:
            await conn.close()
        assert sorted(versions) == [m.version for m in load_migrations()]
        for runner in runners:  # both started every part, the writer among them
            assert runner.app[GATEWAY].writer.running
    finally:
        for runner in runners:
            await bounded_cleanup(runner)


FAIL_ON_PARCEL = """
CREATE FUNCTION fail_on_boom() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.waybill_no LIKE 'BOOM%' THEN
        RAISE EXCEPTION 'disk full (simulated)';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER boom BEFORE INSERT ON parcels FOR EACH ROW EXECUTE FUNCTION fail_on_boom();
"""


async def test_a_database_failure_mid_batch_reports_nothing_accepted_and_writes_nothing(
    server_dsn: str, vault: PersonalDataVault, settings: Settings
) -> None:
    dsn = await make_database(server_dsn)
    pool: asyncpg.Pool[Any] = await create_pool(dsn, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await conn.execute(FAIL_ON_PARCEL)
        keys = await make_keys(pool)
        gw, runner = await start_gateway(settings, pool, vault, keys)
        try:
            # The failure strikes after the events were inserted, inside the same transaction.
            batch = parcel_flow(keys.site, "OK0000000001") + parcel_flow(keys.site, "BOOM000001")
            async with gw.http.post(f"{gw.url}/v1/events", json=batch, headers=gw.auth()) as r:
                body = await r.json()
                assert r.status == 503, body
                assert r.headers["Content-Type"].startswith("application/problem+json")
                assert body["code"] == "database_unavailable"
                assert "Retry-After" in r.headers
            async with pool.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM events") == 0
                assert await conn.fetchval("SELECT count(*) FROM parcels") == 0
                assert await conn.fetchval("SELECT count(*) FROM realname_records") == 0
            # The gateway keeps serving, and the good parcel goes through on its own.
            ok = parcel_flow(keys.site, "OK0000000002")
            async with gw.http.post(f"{gw.url}/v1/events", json=ok, headers=gw.auth()) as r:
                assert r.status == 200
                assert (await r.json())["accepted"] == len(ok)
        finally:
            await gw.http.close()
            await bounded_cleanup(runner)
    finally:
        await close_pool(pool)


async def test_concurrent_group_commits_accept_each_event_once_and_log_it_once(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    async with writer_on_fresh_database(server_dsn, 6, max_wait_s=0.0, max_inflight=3) as (
        pool,
        writer,
        keys,
    ):
        now = datetime.now(UTC)
        flows = [parcel_flow(keys.site, f"CC{n:010d}") for n in range(8)]
        prepared = [
            prepare(EVENT_ADAPTER.validate_python(e), vault, now) for flow in flows for e in flow
        ]
        await writer.start()
        # Every event is sent three times, one event per submission, so the copies land in
        # different groups committed side by side (and the same parcel in several at once).
        submissions = [[p] for p in prepared] * 3
        outcomes = await asyncio.gather(*(writer.submit(s) for s in submissions))
        by_event: dict[Any, list[Outcome]] = {}
        for sub, (outcome,) in zip(submissions, outcomes, strict=True):
            by_event.setdefault(sub[0].event_id, []).append(outcome)
        assert all(
            sorted(o) == [Outcome.ACCEPTED, *[Outcome.DUPLICATE] * 2] for o in by_event.values()
        )
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM events") == len(prepared)
            assert await conn.fetchval("SELECT count(*) FROM ledger_leaves") == len(prepared)
            leaves = await conn.fetchval(
                "SELECT count(DISTINCT leaf_index) FROM ledger_leaves WHERE site_id = $1", keys.site
            )
            assert leaves == len(prepared)  # dense, one leaf per event
            compliant = await conn.fetchval(
                "SELECT count(*) FROM parcels WHERE compliant AND dispatched_at IS NOT NULL"
            )
            assert compliant == len(flows)
            dispatched = await conn.fetchval(
                "SELECT sum(dispatched) FROM site_daily_rates WHERE site_id = $1", keys.site
            )
            assert dispatched == len(flows)  # each parcel counted once in the rollup
            head = await ledger_store.latest_root(conn, keys.site)
            hashes = await conn.fetch(
                "SELECT leaf_hash FROM ledger_leaves WHERE site_id = $1 ORDER BY leaf_index",
                keys.site,
            )
            assert head.root_hash == merkle_root([bytes(r[0]) for r in hashes])
        # The writer's appends chain on where it left the log (storage.ledger.LedgerTips): its
        # tip is the stored head.
        tip = writer.ledger_tips.left_at(keys.site)
        assert tip is not None
        assert (tip[0].size, tip[1]) == (head.tree_size, head.root_hash)


async def test_a_sites_concurrent_commits_add_to_their_own_rollup_stripes(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    """Two transactions that re-derive parcels of one site and day on connections in different
    stripes: the second adds its deltas while the first still holds its rows, and the rates
    sum both stripes."""
    async with writer_on_fresh_database(server_dsn, 20) as (pool, writer, keys):
        waybills = ["ST0000000001", "ST0000000002"]
        await writer.start()
        now = datetime.now(UTC)
        for waybill in waybills:
            events = parcel_flow(keys.site, waybill, flow="air")
            await writer.submit(
                [prepare(EVENT_ADAPTER.validate_python(e), vault, now) for e in events]
            )
        # The site stops X-raying air parcels: re-deriving moves each parcel's counters.
        await pool.execute("UPDATE sites SET xray_flows = '{rail}' WHERE site_id = $1", keys.site)
        held = [await pool.acquire() for _ in range(ROLLUP_STRIPES + 1)]
        try:
            stripe = {
                c: await c.fetchval("SELECT pg_backend_pid() % $1", ROLLUP_STRIPES) for c in held
            }
            first = held[0]
            others = [c for c in held if stripe[c] != stripe[first]]
            assert others, f"all {len(held)} connections share stripe {stripe[first]}"
            second = others[0]
            async with first.transaction():
                await reevaluate_parcels(first, [(keys.site, waybills[0])], now)
                async with second.transaction():  # would wait for the first's COMMIT if shared
                    await asyncio.wait_for(
                        reevaluate_parcels(second, [(keys.site, waybills[1])], now), 30
                    )
        finally:
            for conn in held:
                await pool.release(conn)
        rows = await pool.fetch(
            "SELECT stripe, dispatched, xray_required FROM site_daily_rates WHERE site_id = $1",
            keys.site,
        )
        assert sum(r["dispatched"] for r in rows) == 2
        assert sum(r["xray_required"] for r in rows) == 0  # each parcel moved once
        assert {stripe[first], stripe[second]} <= {r["stripe"] for r in rows}
        async with pool.acquire() as conn:
            (day,) = await parcel_store.site_rates(conn, keys.site, BASE.date(), BASE.date(), "day")
        assert day.day == BASE.date()
        assert (day.counts.dispatched, day.counts.xray_required, day.counts.all_ok) == (2, 0, 2)


async def test_inspections_seals_and_dispatches_are_read_from_the_event_log(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    async with writer_on_fresh_database(server_dsn, 4) as (pool, writer, keys):
        flow = parcel_flow(keys.site, "DV0000000001")
        await writer.start()
        await writer.submit(
            [prepare(EVENT_ADAPTER.validate_python(e), vault, datetime.now(UTC)) for e in flow]
        )
        sent = {e["type"]: e for e in flow}
        where = "WHERE site_id = $1 AND waybill_no = 'DV0000000001'"
        async with pool.acquire() as conn:
            inspection = await conn.fetchrow(f"SELECT * FROM inspections {where}", keys.site)
            seal = await conn.fetchrow(f"SELECT * FROM seals {where}", keys.site)
            dispatch = await conn.fetchrow(f"SELECT * FROM dispatches {where}", keys.site)
            # They are the log's rows, so there is no second copy to change on its own.
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute(f"UPDATE seals SET clerk_id = 'someone else' {where}", keys.site)
        assert inspection is not None
        assert seal is not None
        assert dispatch is not None
        ins = sent["inspection.completed"]
        assert (str(inspection["event_id"]), inspection["clerk_id"], inspection["result"]) == (
            ins["event_id"],
            ins["clerk_id"],
            ins["result"],
        )
        assert str(seal["event_id"]) == sent["parcel.sealed"]["event_id"]
        assert dispatch["carrier"] == sent["parcel.dispatched"]["carrier"] == "SF"


@pytest.mark.parametrize(
    ("inflight", "max_events", "groups"),
    [
        (1, 2000, [40]),
        (2, 2000, [20, 20]),
        (4, 2000, [10, 10, 10, 10]),
        (2, 3, [1] + [3] * 13),  # the configured group size holds over the split's minimum
    ],
)
async def test_requests_queued_together_are_split_over_the_free_commit_slots(
    server_dsn: str, vault: PersonalDataVault, inflight: int, max_events: int, groups: list[int]
) -> None:
    # Forty single-event requests queue before the writer runs (as a loop pass that parsed
    # them all leaves them): the writer splits them evenly over its free commit slots, so the
    # groups commit side by side; with one slot they are one group.
    async with writer_on_fresh_database(
        server_dsn, inflight + 2, max_wait_s=0.0, max_inflight=inflight, min_share=4,
        max_events=max_events,
    ) as (_pool, writer, keys):  # fmt: skip
        now = datetime.now(UTC)
        prepared = [
            prepare(EVENT_ADAPTER.validate_python(e), vault, now)
            for n in range(40)
            for e in parcel_flow(keys.site, f"FS{n:010d}")[:1]
        ]
        sizes: list[int] = []
        writer.on_commit.append(lambda report, size: sizes.append(size))
        waiting = [asyncio.ensure_future(writer.submit([p])) for p in prepared]
        await asyncio.sleep(0)  # every submission queued
        assert writer.depth == 40
        await writer.start()
        outcomes = await asyncio.gather(*waiting)
        assert [o for (o,) in outcomes] == [Outcome.ACCEPTED] * 40
        assert sorted(sizes) == sorted(groups)


async def test_the_writer_replaces_a_kept_connection_that_the_server_closed(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    async with writer_on_fresh_database(server_dsn, 4, max_wait_s=0.0, max_inflight=1) as (
        pool,
        writer,
        keys,
    ):
        now = datetime.now(UTC)
        flows = [parcel_flow(keys.site, f"KC{n:010d}") for n in range(3)]
        prepared = [
            [prepare(EVENT_ADAPTER.validate_python(e), vault, now) for e in f] for f in flows
        ]
        await writer.start()
        assert set(await writer.submit(prepared[0])) == {Outcome.ACCEPTED}
        # The writer keeps its connection between groups; the server drops it meanwhile.
        async with pool.acquire() as conn:
            killed = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert killed >= 1
        # The group that meets the dead connection, if one does, fails as a whole (nothing
        # accepted); the retry gets a working connection.
        for _ in range(3):
            try:
                outcomes = await writer.submit(prepared[1])
                break
            except DatabaseUnavailableError:
                continue
        assert set(outcomes) == {Outcome.ACCEPTED}
        assert set(await writer.submit(prepared[2])) == {Outcome.ACCEPTED}
        async with pool.acquire() as conn:
            total = sum(len(f) for f in flows)
            assert await conn.fetchval("SELECT count(*) FROM events") == total
            assert await conn.fetchval("SELECT count(*) FROM ledger_leaves") == total


async def test_a_refused_value_in_a_group_is_isolated_without_waiting_for_the_pool(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    """The per-request retries after a refused value run on the group's own connection: with a
    one-connection pool they used to wait for a second connection for ever."""
    async with writer_on_fresh_database(
        server_dsn, 1, max_wait_s=0.05, max_inflight=1, acquire_timeout_s=2.0
    ) as (pool, writer, keys):
        now = datetime.now(UTC)
        good = [
            prepare(EVENT_ADAPTER.validate_python(e), vault, now)
            for e in parcel_flow(keys.site, "KD0000000001")
        ]
        event = prepare(
            EVENT_ADAPTER.validate_python(parcel_flow(keys.site, "KD0000000002")[0]), vault, now
        )
        # A payload PostgreSQL refuses (jsonb has no NUL), as a client could never send one.
        poison = dataclasses.replace(event, payload_json='{"note": "\\u0000"}')
        await writer.start()
        results = await asyncio.wait_for(
            asyncio.gather(writer.submit(good), writer.submit([poison]), return_exceptions=True),
            timeout=10,
        )
        assert results[0] == [Outcome.ACCEPTED] * len(good)
        assert isinstance(results[1], UnstorableEventError)
        await writer.close()  # gives back the connection it keeps between groups
        async with pool.acquire(timeout=2) as conn:
            assert await conn.fetchval("SELECT count(*) FROM events") == len(good)


async def test_a_submission_after_the_writer_closed_is_refused_not_left_waiting(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    async with writer_on_fresh_database(server_dsn, 1, max_wait_s=0.0) as (_, writer, keys):
        event = prepare(
            EVENT_ADAPTER.validate_python(parcel_flow(keys.site, "KD0000000003")[0]),
            vault,
            datetime.now(UTC),
        )
        await writer.start()
        await writer.close()
        with pytest.raises(DatabaseUnavailableError):
            await asyncio.wait_for(writer.submit([event]), timeout=2)


def _prepared(site: str, waybill: str, vault: PersonalDataVault) -> list[PreparedEvent]:
    now = datetime.now(UTC)
    return [
        prepare(EVENT_ADAPTER.validate_python(e), vault, now) for e in parcel_flow(site, waybill)
    ]


async def test_a_commit_that_never_ends_is_cut_at_its_limit(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    """A commit stuck on its connection (here: a statement that sleeps) would hold its slot and
    its requests for good; past the limit the connection is cut, the requests get 503 and the
    writer goes on with the next group."""
    stuck = [True]

    async def sleepy(conn: Any, events: Any, now: datetime) -> None:
        if stuck[0]:
            await conn.execute("SELECT pg_sleep(30)")

    async with writer_on_fresh_database(
        server_dsn, 3, max_wait_s=0.0, commit_timeout_s=0.5, on_accepted=sleepy
    ) as (pool, writer, keys):
        await writer.start()
        with pytest.raises(DatabaseUnavailableError, match="no event was committed"):
            await asyncio.wait_for(writer.submit(_prepared(keys.site, "TO0000000001", vault)), 10)
        stuck[0] = False
        # What follows checks that the writer goes on, not how fast: this commit, on a fresh
        # connection (about 25 ms here), once took over 0.5 s in a CI run and was cut in its
        # turn.
        writer.commit_timeout_s = 30.0
        assert (
            await asyncio.wait_for(writer.submit(_prepared(keys.site, "TO0000000002", vault)), 10)
            == [Outcome.ACCEPTED] * 6
        )
        async with pool.acquire(timeout=2) as conn:
            assert await conn.fetchval("SELECT count(*) FROM events") == 6


async def test_a_connection_lost_during_the_commit_is_reported_as_outcome_unknown(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    """Not "nothing committed": the COMMIT was sent, and whether it landed cannot be known. A
    deferred trigger makes the server end the connection while it commits."""
    async with writer_on_fresh_database(server_dsn, 3, max_wait_s=0.0) as (pool, writer, keys):
        async with pool.acquire() as conn:
            await conn.execute(
                "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;"
                " CREATE CONSTRAINT TRIGGER die_at_commit AFTER INSERT ON events"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die()"
            )
        await writer.start()
        events = _prepared(keys.site, "CL0000000001", vault)
        with pytest.raises(DatabaseUnavailableError, match="outcome unknown"):
            await asyncio.wait_for(writer.submit(events), 10)
        async with pool.acquire() as conn:
            await conn.execute("DROP TRIGGER die_at_commit ON events")
        # The retry the answer asks for: here the commit had not landed.
        assert await asyncio.wait_for(writer.submit(events), 10) == [Outcome.ACCEPTED] * 6


async def test_a_bug_tripped_by_one_request_fails_that_request_only(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    async def picky(conn: Any, events: Any, now: datetime) -> None:
        if any(e.waybill_no == "BG0000000001" for e in events):
            raise RuntimeError("a bug that this parcel trips")

    async with writer_on_fresh_database(server_dsn, 3, max_wait_s=0.2, on_accepted=picky) as (
        _pool,
        writer,
        keys,
    ):
        await writer.start()
        poison, good = (_prepared(keys.site, w, vault) for w in ("BG0000000001", "BG0000000002"))
        results = await asyncio.wait_for(
            asyncio.gather(writer.submit(poison), writer.submit(good), return_exceptions=True),
            timeout=10,
        )
        assert isinstance(results[0], RuntimeError)
        assert results[1] == [Outcome.ACCEPTED] * 6


async def test_no_connection_in_time_fails_the_group_as_unavailable(
    server_dsn: str, vault: PersonalDataVault
) -> None:
    async with writer_on_fresh_database(
        server_dsn, 1, max_wait_s=0.0, max_inflight=1, acquire_timeout_s=0.3
    ) as (pool, writer, keys):
        now = datetime.now(UTC)
        flow = [
            prepare(EVENT_ADAPTER.validate_python(e), vault, now)
            for e in parcel_flow(keys.site, "KE0000000001")
        ]
        await writer.start()
        async with pool.acquire():  # someone else holds the only connection
            try:
                await asyncio.wait_for(writer.submit(flow), timeout=5)
            except DatabaseUnavailableError:
                pass
            else:
                raise AssertionError("accepted without a connection")
        assert set(await writer.submit(flow)) == {Outcome.ACCEPTED}  # and recovers


async def test_the_embedded_server_runs_with_its_settings(server_dsn: str) -> None:
    """Made at start: a new connection sees them (the reload is a signal, so it is given a
    moment). shared_buffers only takes effect at a start: the test session's server, started
    on a new data directory, was restarted once for it."""
    if os.environ.get("SCREENING_TEST_DATABASE_URL"):
        pytest.skip("an external server is configured by its operator")
    assert EMBEDDED_SETTINGS["max_wal_size"] == "4GB"
    seen: dict[str, str] = {}
    for _ in range(50):
        conn = await asyncpg.connect(server_dsn)
        try:
            seen = {name: await conn.fetchval("SELECT current_setting($1)", name)
                    for name in EMBEDDED_SETTINGS}  # fmt: skip
        finally:
            await conn.close()
        if seen == EMBEDDED_SETTINGS:
            break
        await asyncio.sleep(0.1)
    assert seen == EMBEDDED_SETTINGS


@pytest.mark.parametrize(
    ("memory", "expected"),
    [(None, "128MB"), (256 * 2**20, "128MB"), (2 * 2**30, "512MB"), (3 * 2**30, "768MB"),
     (4 * 2**30, "1GB"), (64 * 2**30, "1GB")],
)  # fmt: skip
def test_the_embedded_servers_buffers_are_a_quarter_of_memory_within_bounds(
    memory: int | None, expected: str
) -> None:
    assert shared_buffers_for(memory) == expected


def test_a_pool_too_small_for_the_writer_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="pool_max_size"):
        Settings(pool_max_size=3, group_commit_max_inflight=2)
    assert Settings(pool_max_size=4, group_commit_max_inflight=2).pool_max_size == 4
    # The default writer commits three groups at once: a pool of 4 no longer holds it.
    with pytest.raises(ValidationError, match="pool_max_size"):
        Settings(pool_max_size=4)
    assert Settings(pool_max_size=5).pool_max_size == 5


@pytest.mark.parametrize("site_id", ["S001\n", "", "-S001", "S 001", "S" * 65])
async def test_a_site_id_outside_its_pattern_is_refused(
    pool: asyncpg.Pool[Any], site_id: str
) -> None:
    """'S001\\n' passed a '^...$' pattern under re.match; such an id later broke the ledger's
    checkpoint origin for every site after it."""
    with pytest.raises(BadRequestError) as refused:
        await access.add_site(pool, site_id, "bad id")
    assert refused.value.code == "invalid_site_id"
