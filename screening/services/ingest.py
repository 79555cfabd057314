"""Event ingest: turn validated wire events into prepared records and commit them in groups.

Group commit: request handlers hand their events to one writer task per process, which takes
everything queued (up to a limit, waiting a moment for company) and commits it in a single
transaction; every waiting request learns its per-event outcome only after that commit. So many
single-event POSTs share one fsync, and "accepted" always means committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from screening.api.schemas import EventIn, RealnameRegisteredIn
from screening.background import cancel_and_wait
from screening.domain.compliance import ParcelStatus, SitePolicy, evaluate_parcel
from screening.domain.events import ParcelEvent
from screening.domain.identity import mask_document, mask_name, mask_phone
from screening.domain.ledger import canonical_entry
from screening.domain.rates import RateCounts, RateKey, contribution, rollup_delta
from screening.domain.records import (
    CONTRACT_AGREEMENT,
    EVENT_TYPES,
    ContractAgreement,
    PreparedEvent,
    SealedPersonalData,
    event_from_payload,
)
from screening.protection import PersonalDataVault, field_associated_data
from screening.storage import Conn
from screening.storage import events as event_store
from screening.storage import ledger as ledger_store
from screening.storage import parcels as parcel_store
from screening.storage import sites as site_store
from screening.storage.errors import DatabaseUnavailableError, UnstorableEventError
from screening.storage.sites import Site

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


# One encoder for every event: json.dumps with any option builds a new JSONEncoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
# And JSONEncoder.encode builds a new C encoder per call, with a dict to catch reference cycles
# (which model_dump's output cannot hold: a cycle here ends in RecursionError instead). Made
# once, the same C encoder with the same options writes the same text, 1 µs sooner per event.
_C_MAKE_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)  # None off CPython
_CANONICAL_C = (
    None
    if _C_MAKE_ENCODER is None
    else _C_MAKE_ENCODER(
        None, _CANONICAL.default, json.encoder.encode_basestring, None, ":", ",", True, False, True
    )  # markers, default, string encoder, indent, separators, sort_keys, skipkeys, allow_nan
)


def canonical_text(data: Any) -> str:
    """JSON with sorted keys, no spaces and non-ASCII kept: the text an event is digested as."""
    if _CANONICAL_C is None:
        return _CANONICAL.encode(data)
    return "".join(_CANONICAL_C(data, 0))


def canonical_json(data: Any) -> bytes:
    return canonical_text(data).encode()


def prepare(
    event: EventIn,
    vault: PersonalDataVault,
    received_at: datetime,
    agreements: Mapping[tuple[str, str], Sequence[ContractAgreement]] | None = None,
) -> PreparedEvent:
    """Redact, seal and digest one validated event. Pure apart from the vault's random nonces.

    ``agreements``: the contract customers' agreements on file, by (site_id, customer_ref); a
    contract customer's registration is stored with the one that covers its day, or with none.
    """
    full = event.model_dump(mode="json")
    text = canonical_text(full)
    # Of the event as validated (waybill in capitals): what a resend is judged by.
    digest = vault.digest("event", text)
    payload = full  # redacted below where it must be; ``text`` is the event as received
    personal: SealedPersonalData | None = None
    stored_json: str | None = text  # what the log stores, when it is the event as received
    # The type's tag before isinstance: a pydantic model class checks instances through
    # ABCMeta, at a cost that shows on this path (it runs for every event).
    realname = event.type == "realname.registered"
    if (
        realname
        and isinstance(event, RealnameRegisteredIn)
        and event.contract_customer_ref is not None
    ):
        on_file = (agreements or {}).get((event.site_id, event.contract_customer_ref), ())
        covering = next((a for a in on_file if a.covers(event.occurred_at)), None)
        payload[CONTRACT_AGREEMENT] = covering.agreement_no if covering else None
        stored_json = None  # the log's text is made from ``payload``
    if realname and isinstance(event, RealnameRegisteredIn) and event.sender is not None:
        sender = event.sender
        record = (event.site_id, str(event.event_id))
        document = vault.seal(
            sender.document_number, aad=field_associated_data(*record, "document_number")
        )
        name = vault.seal(sender.name, aad=field_associated_data(*record, "name"))
        phone = (
            vault.seal(sender.phone, aad=field_associated_data(*record, "phone"))
            if sender.phone
            else None
        )
        personal = SealedPersonalData(
            key_id=document.key_id,
            document_type=sender.document_type.value,
            document_masked=mask_document(sender.document_number),
            document_hmac=vault.digest("document", sender.document_number),
            document_sealed=document.blob,
            name_masked=mask_name(sender.name),
            name_sealed=name.blob,
            phone_masked=mask_phone(sender.phone) if sender.phone else None,
            phone_sealed=phone.blob if phone else None,
        )
        payload["sender"] = {
            "document_type": personal.document_type,
            "document_masked": personal.document_masked,
            "name_masked": personal.name_masked,
            "phone_masked": personal.phone_masked,
        }
        stored_json = None  # redacted: the log's text is made from ``payload``
    domain = event_from_payload(
        event.type, event.event_id, event.site_id, event.waybill_no, event.occurred_at, payload
    )
    return PreparedEvent(
        event_type=EVENT_TYPES[event.type],
        site_id=event.site_id,
        event_id=event.event_id,
        waybill_no=event.waybill_no,
        occurred_at=event.occurred_at,
        received_at=received_at,
        payload=payload,
        digest=digest,
        event=domain,
        personal_data=personal,
        payload_json=stored_json,
    )


@dataclass(frozen=True, slots=True)
class CommitReport:
    """What one group commit did (for metrics and for callers that want to push updates)."""

    events: int
    statuses: dict[tuple[str, str], ParcelStatus]
    seconds: float


# Called in the commit's transaction with the newly accepted events (screening.alerts.intake).
EventsHook = Callable[[Conn, Sequence[PreparedEvent], datetime], Awaitable[None]]


async def commit_events(
    conn: Conn,
    prepared: Sequence[PreparedEvent],
    now: datetime,
    on_accepted: EventsHook | None = None,
    ledger_tips: ledger_store.LedgerTips | None = None,
) -> tuple[list[Outcome], CommitReport]:
    """Write a group of events and everything derived from them in the caller's transaction.
    ``ledger_tips``: where this process last left each site's ledger (one
    ``storage.ledger.LedgerTips`` per process), which spares the ledger append a round trip
    while the log is still there."""
    started = time.perf_counter()
    outcomes: list[Outcome | None] = [None] * len(prepared)
    first_index: dict[tuple[str, Any], int] = {}
    unique: list[int] = []  # the first of each event id, in arrival order
    copies: list[int] = []  # the same event id again in this group
    for i, p in enumerate(prepared):
        if first_index.setdefault(p.key, i) == i:
            unique.append(i)
        else:
            copies.append(i)
    firsts = [prepared[i] for i in unique]

    # Lock the affected parcels first, so a concurrent gateway cannot interleave recomputation.
    sites = await parcel_store.lock_parcels_read_sites(conn, {p.parcel_key for p in firsts})
    # Rows go in in key order, so two transactions holding the same event ids (a retry racing
    # its original) wait on each other in one order and cannot deadlock.
    ordered = sorted(firsts, key=_event_order)
    group = await event_store.insert_events(conn, ordered)
    # The new events by identity (each prepared event is its own object), which spares hashing
    # their keys again: a UUID's __hash__ is Python code.
    record_digests = {id(ordered[i]): digest for i, digest in group.inserted}
    existing = await event_store.fetch_digests(
        conn, [p.key for p in firsts if id(p) not in record_digests]
    )
    for i in unique:
        p = prepared[i]
        if id(p) in record_digests:
            outcomes[i] = Outcome.ACCEPTED
        else:
            outcomes[i] = Outcome.DUPLICATE if existing.get(p.key) == p.digest else Outcome.CONFLICT
    for i in copies:  # judged against what is stored now: the first copy, or the earlier event
        p = prepared[i]
        first = prepared[first_index[p.key]]
        stored_digest = first.digest if id(first) in record_digests else existing.get(p.key)
        outcomes[i] = Outcome.DUPLICATE if stored_digest == p.digest else Outcome.CONFLICT
    new = [p for p in firsts if id(p) in record_digests]
    if on_accepted is not None and new:
        await on_accepted(conn, new, now)
    statuses: dict[tuple[str, str], ParcelStatus] = {}
    parcel_keys = sorted({p.parcel_key for p in new})
    if parcel_keys:
        # The insert read each parcel's row and earlier events in its own snapshot, which
        # does not hold the rows it wrote: the new events join their parcels' histories here.
        history = {key: group.history.get(key, []) for key in parcel_keys}
        for p in new:
            history[p.parcel_key].append(p.event)
        statuses = await _derive_and_save(conn, history, group.parcels, sites, now)
    # Each accepted event becomes a leaf of its site's Merkle log in this same transaction, so
    # no committed event is ever missing from the ledger (screening.domain.ledger). Last, because
    # it locks the site's log until the commit: concurrent commits to one site then wait for
    # each other only around the commit itself.
    await ledger_store.append_stored(
        conn,
        [(p.site_id, p.event_id, _ledger_entry(p, record_digests[id(p)])) for p in new],
        ledger_tips,
    )
    final = [o if o is not None else Outcome.CONFLICT for o in outcomes]
    return final, CommitReport(len(new), statuses, time.perf_counter() - started)


async def _derive_and_save(
    conn: Conn,
    history: Mapping[tuple[str, str], list[ParcelEvent]],
    stored: Mapping[tuple[str, str], parcel_store.StoredParcel],
    sites: Mapping[str, Site],
    now: datetime,
) -> dict[tuple[str, str], ParcelStatus]:
    """Evaluate each parcel from its whole history under its site's policy and save what
    changed: its row, its violations, and the rollup's move from what it contributed before
    (``stored``) to what it contributes now. The parcels must be locked."""
    statuses: dict[tuple[str, str], ParcelStatus] = {}
    changes: dict[str, list[Any]] = {}
    for key in sorted(history):
        policy = sites[key[0]].policy if key[0] in sites else SitePolicy()
        status = evaluate_parcel(key[1], history[key], policy)
        statuses[key] = status
        old = stored[key].contribution if key in stored else None
        changes.setdefault(key[0], []).append((old, contribution(status)))
    deltas: dict[tuple[str, RateKey], RateCounts] = {}
    for site_id, pairs in changes.items():
        for rate_key, counts in rollup_delta(pairs).items():
            deltas[(site_id, rate_key)] = counts
    await parcel_store.save_parcels(conn, statuses, now, stored, deltas)
    return statuses


async def reevaluate_parcels(
    conn: Conn, keys: Sequence[tuple[str, str]], now: datetime
) -> dict[tuple[str, str], ParcelStatus]:
    """Derive the given stored parcels again from their logged events under their sites'
    current policies, in the caller's transaction (after a site's policy changed)."""
    sites = await parcel_store.lock_parcels_read_sites(conn, keys)
    # Read after the lock, so every committed event and the current row are seen.
    stored = await parcel_store.read_stored(conn, keys)
    history = await event_store.load_parcel_events(conn, keys)
    return await _derive_and_save(conn, history, stored, sites, now)


async def settle_after(pool: asyncpg.Pool[Any], moment: datetime, limit_s: float = 30.0) -> bool:
    """Wait (at most ``limit_s``) until no transaction of the database that began before
    ``moment`` is still open: after a site's policy changed, an ingest among them may have
    read the old policy and not yet written its parcels. Whether they all ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    async with pool.acquire() as conn:
        while await site_store.older_transactions(conn, moment):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.05)
    return True


async def reevaluate_site(pool: asyncpg.Pool[Any], site_id: str, batch: int = 1000) -> int:
    """Derive every stored parcel of a site again under its policy as it now is, so that its
    rows, violations and rates agree with what the parcel endpoint says; the number of
    parcels. One transaction per ``batch`` parcels, each locking them as ingest does, so
    ingest goes on meanwhile."""
    done, after = 0, ""
    while True:
        async with pool.acquire() as conn, conn.transaction():
            keys = await parcel_store.parcel_keys_after(conn, site_id, after, batch)
            if not keys:
                return done
            await reevaluate_parcels(conn, keys, datetime.now(UTC))
        done += len(keys)
        after = keys[-1][1]


def _open(conn: PoolConnectionProxy[Any]) -> bool:
    """Whether a kept pool connection still works: when the server closes a connection, asyncpg
    hands it back to its pool itself and the proxy refuses every call."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


def _event_order(p: PreparedEvent) -> tuple[str, int]:
    return (p.site_id, p.event_id.int)  # the int orders as the bytes do (big-endian)


def _ledger_entry(p: PreparedEvent, record_digest: bytes) -> bytes:
    """A new event's ledger entry: of the values just written (text, bytea and microsecond
    timestamps are stored unchanged) and the record digest PostgreSQL computed."""
    return canonical_entry(
        p.site_id, p.event_id, p.event_type, p.waybill_no, p.occurred_at, p.digest, record_digest
    )


_SHUTTING_DOWN = "the gateway is shutting down; nothing committed"

# How a connection that is gone (or being shut down by the server) fails a statement: met
# during the COMMIT, whether it landed is unknown. Any other error there is the server's answer
# to the COMMIT (a deferred constraint, say), and it was rolled back.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


@dataclass
class _Submission:
    events: Sequence[PreparedEvent]
    future: asyncio.Future[list[Outcome]]


@dataclass
class GroupCommitWriter:
    """One writer per process: batches queued submissions into single transactions.

    Up to ``max_inflight`` group commits run at once, each on its own connection: while one
    waits for the database (its round trips, its fsync), the next group is gathered and sent, so
    the commit's latency is not the ingest rate's ceiling. When every slot is busy the queue
    grows and the next group is the larger for it. Commits that touch the same parcels or the
    same site's ledger still serialise on their locks (see ``commit_events``).

    The writer keeps the connections it commits on between groups instead of handing each back
    to the pool: a pool release costs a reset round trip, and a group commit is already a
    handful of round trips. A connection that failed is given back (the pool replaces it).
    """

    pool: asyncpg.Pool[Any]
    max_events: int = 1000
    max_wait_s: float = 0.002
    queue_size: int = 20000
    max_inflight: int = 3
    min_share: int = 32  # a group split over free slots takes at least this many events
    acquire_timeout_s: float = 10.0  # waiting longer for a connection fails the group (503)
    commit_timeout_s: float = 30.0  # a commit running longer has its connection abandoned
    on_commit: list[Any] = field(default_factory=list)  # callables(CommitReport, batch_size)
    on_accepted: EventsHook | None = None  # in the transaction, with the new events
    # Where this process left each site's ledger: its appends then skip reading the state first.
    ledger_tips: ledger_store.LedgerTips = field(default_factory=ledger_store.LedgerTips)
    _queue: asyncio.Queue[_Submission] = field(init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _inflight: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _idle: list[PoolConnectionProxy[Any]] = field(default_factory=list, init=False)  # held
    _queued_events: int = field(default=0, init=False)  # in the submissions queued
    _busy: int = field(default=0, init=False)  # slots taken: groups gathering or committing
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.queue_size)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit-writer")

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._task)
        self._task = None
        # What is queued is answered first: waiting for the commits in flight (and giving back
        # the connections) may outlast the caller's bound on this stop.
        self._fail_queued()
        for task in list(self._inflight):
            await cancel_and_wait(task)
        while self._idle:
            await self.pool.release(self._idle.pop())
        self._fail_queued()

    def _fail_queued(self) -> None:
        while not self._queue.empty():
            sub = self._queue.get_nowait()
            if not sub.future.done():
                sub.future.set_exception(DatabaseUnavailableError(_SHUTTING_DOWN))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, events: Sequence[PreparedEvent]) -> list[Outcome]:
        """Queue events for the next group commit and wait until it is committed (or failed)."""
        if not events:
            return []
        if self._closed:
            raise DatabaseUnavailableError(_SHUTTING_DOWN)
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Submission(events, future))
        if self._closed and not future.done():
            # Put after the writer stopped reading the queue: nothing will commit it.
            future.set_exception(DatabaseUnavailableError(_SHUTTING_DOWN))
        self._queued_events += len(events)
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(max(1, self.max_inflight))
        while True:
            # A free slot first, then the group: whatever queued while all were busy joins it.
            await slots.acquire()
            self._busy += 1
            try:
                group = [await self._queue.get()]
            except asyncio.CancelledError:
                self._busy -= 1
                slots.release()
                raise
            total = len(group[0].events)
            self._queued_events -= total
            limit = self._share(total)
            deadline = loop.time() + self.max_wait_s
            while total < limit:
                try:
                    sub = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    # Wait out the window, then take whatever came. Not wait_for(get()): that
                    # wraps the get in a new task for every arrival (thousands a second with
                    # single-event POSTs), and on Python 3.11 a get that completes as the
                    # timeout fires can be lost, leaving its request waiting for good.
                    try:
                        await asyncio.sleep(remaining)
                    except asyncio.CancelledError:
                        self._fail(group, _SHUTTING_DOWN)
                        raise
                    continue
                group.append(sub)
                total += len(sub.events)
                self._queued_events -= len(sub.events)
            task = asyncio.create_task(self._commit_in_slot(group, slots), name="group-commit")
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    def _share(self, first: int) -> int:
        """How many events the group being gathered may take: its fair share of what is queued
        when other slots are free too.

        Requests that arrive together (many connections each waiting for its commit) are
        parsed in one pass of the event loop and queue up before the writer runs. Taken as one
        group they would commit alone while the process waits for the database with nothing
        else to do, then all answer at once and come back together: a convoy that leaves the
        other slots idle. Splitting what is queued over the free slots puts their commits in
        flight together; answers then come back at different times, and the next requests
        are parsed while earlier groups are in the database.
        """
        free = self.max_inflight - self._busy + 1  # this group's slot and the idle ones
        if free <= 1:
            return self.max_events
        share = -(-(first + self._queued_events) // free)  # rounded up
        return min(self.max_events, max(self.min_share, share))

    async def _commit_in_slot(self, group: list[_Submission], slots: asyncio.Semaphore) -> None:
        try:
            await self._commit(group)
        except asyncio.CancelledError:
            # Shutting down mid-commit: the transaction is rolled back (or its commit is in
            # doubt); either way the caller must not hear "accepted", so it will retry and
            # get "duplicate" if the commit did land.
            self._fail(group, "the gateway is shutting down; retry")
            raise
        except Exception as exc:  # a bug, not a database answer: fail the group, keep serving
            log.exception("group commit raised; nothing in it was reported accepted")
            self._fail(group, "", error=exc)
        finally:
            self._busy -= 1
            slots.release()

    async def _one_by_one(self, conn: PoolConnectionProxy[Any], group: list[_Submission]) -> bool:
        """Commit each submission of a failed group in its own transaction (on this same
        connection, so the retries never wait for the pool); whether it stayed fit to keep."""
        fit = True
        for sub in group:
            fit = await self._commit_on(conn, [sub]) and fit
        return fit

    def _abandon(self, conn: PoolConnectionProxy[Any]) -> None:
        log.error(
            "a group commit ran past %.0f s; its connection is cut (requests get 503)",
            self.commit_timeout_s,
        )
        conn.terminate()

    @staticmethod
    def _fail(group: list[_Submission], reason: str, error: Exception | None = None) -> None:
        for sub in group:
            if not sub.future.done():
                sub.future.set_exception(error or DatabaseUnavailableError(reason))

    async def _connection(self) -> PoolConnectionProxy[Any]:
        """A kept connection that is still open (the server may have closed one meanwhile),
        else a fresh one from the pool, waiting at most ``acquire_timeout_s``."""
        while self._idle:
            conn = self._idle.pop()
            if _open(conn):
                return conn
            await self.pool.release(conn)  # a no-op when asyncpg already gave it back
        return await self.pool.acquire(timeout=self.acquire_timeout_s)

    async def _commit(self, group: list[_Submission]) -> None:
        try:
            conn = await self._connection()
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("group commit found no database connection: %s", exc.__class__.__name__)
            self._fail(group, "the database is unavailable; no event was committed")
            return
        reusable = False
        try:
            reusable = await self._commit_on(conn, group)
        finally:
            if reusable and _open(conn) and len(self._idle) < self.max_inflight:
                self._idle.append(conn)
            else:
                await self.pool.release(conn)

    async def _commit_on(self, conn: PoolConnectionProxy[Any], group: list[_Submission]) -> bool:
        """Commit ``group`` in one transaction on ``conn`` and answer its submissions; whether
        the connection is fit to keep."""
        flat = [p for sub in group for p in sub.events]
        committing = False  # the group's statements are done: what fails now is its COMMIT
        # A commit that never ends (a connection that died without a word, a lock held
        # elsewhere) would hold its slot and its requests for good: past the limit its
        # connection is cut, and every wait on it fails at once.
        overdue = asyncio.get_running_loop().call_later(self.commit_timeout_s, self._abandon, conn)
        try:
            async with conn.transaction():
                outcomes, report = await commit_events(
                    conn, flat, datetime.now(UTC), self.on_accepted, self.ledger_tips
                )
                committing = True
        except asyncpg.DataError as exc:
            overdue.cancel()  # each retry below has its own limit
            # Refused data, rolled back: the connection is fine. One submission holds a value
            # PostgreSQL refuses: commit the others on their own (on this same connection, so
            # the retries never wait for the pool) so that a bad request cannot keep failing
            # its neighbours' events.
            if len(group) > 1:
                log.warning("group commit refused data; committing its requests one by one")
                return await self._one_by_one(conn, group)
            log.warning("request refused by the database: %s", exc.__class__.__name__)
            # Named by the error's class only: PostgreSQL's text may quote the value.
            self._fail(group, "", error=UnstorableEventError(exc.__class__.__name__))
            return True
        except (
            asyncpg.PostgresError,
            OSError,
            asyncpg.InterfaceError,
            # What a kept connection raises when the server closed it an instant ago and the
            # client has not yet read the news (asyncpg then releases it to its pool).
            asyncpg.InternalClientError,
        ) as exc:
            if committing and isinstance(exc, _CONNECTION_LOST):
                # The COMMIT was sent and its answer lost with the connection: it may have
                # landed. A retry tells (an event that was committed answers "duplicate").
                log.exception("group commit's outcome unknown", exc_info=exc)
                self._fail(group, "the database failed during the commit; outcome unknown, retry")
            else:
                log.exception("group commit failed; nothing in it was committed", exc_info=exc)
                self._fail(group, "the database failed; no event was committed")
            return False
        except Exception as exc:  # a bug, not a database answer; rolled back
            overdue.cancel()  # each retry below has its own limit
            # As for refused data: one request's events may be what trips it, and its
            # neighbours should not fail with it (nor with each of its retries).
            if len(group) > 1:
                log.exception("group commit raised; committing its requests one by one")
                return await self._one_by_one(conn, group)
            log.exception("group commit raised; nothing in it was reported accepted")
            self._fail(group, "", error=exc)
            return False
        finally:
            overdue.cancel()
        offset = 0
        for sub in group:
            n = len(sub.events)
            if not sub.future.done():
                sub.future.set_result(outcomes[offset : offset + n])
            offset += n
        for callback in self.on_commit:
            callback(report, len(flat))
        return True
