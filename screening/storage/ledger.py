"""SQL for the per-site ledger: appends, tree heads, proofs, checkpoints and verification.

Every function takes a connection so the caller owns the transaction: appends belong in the
ingest transaction that inserts the events, so an event is logged if and only if it is stored.

Costs, for a site whose log has n leaves:

* ``append_entries`` / ``append_events`` / ``append_stored``: one locked state row, then one
  statement that inserts the new leaves and any completed tile nodes and updates the state;
  O(k + log n) hashing for k entries. With ``LedgerTips`` and the log where this process left
  it, the two are one statement.
* ``latest_root``: one row, O(1).
* ``inclusion_proof`` / ``consistency_proof`` / ``root_at``: two indexed reads of at most
  O(2**8 · log n / 8) stored hashes (tile nodes every 8 levels, see ``domain.ledger``).
* ``verify_site``: one ordered pass over every leaf of the site joined to its event row (O(n),
  streamed through a cursor in O(log n) memory) plus an anti-join for events without a leaf.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from screening.domain.checkpoint import Checkpoint
from screening.domain.ledger import (
    EMPTY_ROOT,
    CompactRange,
    DuplicateEntryError,
    LedgerCorruptError,
    LedgerEntryError,
    LedgerEvent,
    LedgerInconsistentError,
    Node,
    ProofPlan,
    ProofRequestError,
    SiteAudit,
    VerificationReport,
    consistency_ranges,
    event_entry,
    inclusion_ranges,
    leaf_hash,
)
from screening.storage import Conn

ENSURE_STATE = """
INSERT INTO ledger_state (site_id, tree_size, frontier, root_hash) VALUES ($1, 0, '{}', $2)
ON CONFLICT (site_id) DO NOTHING
"""
LOCK_STATE = "SELECT tree_size, frontier FROM ledger_state WHERE site_id = $1 FOR UPDATE"
SELECT_STATE = "SELECT tree_size, frontier, root_hash FROM ledger_state WHERE site_id = $1"
SELECT_UNSIGNED_SITES = """
SELECT s.site_id FROM ledger_state s
WHERE s.tree_size > COALESCE(
    (SELECT max(c.tree_size) FROM ledger_checkpoints c WHERE c.site_id = s.site_id), -1)
ORDER BY s.site_id
"""
# One round trip writes an append: the new leaves, any completed tile nodes (often none: the
# arrays are then empty) and the new state.
WRITE_APPEND = """
WITH leaves AS (
    INSERT INTO ledger_leaves (site_id, leaf_index, event_id, leaf_hash)
    SELECT $1, * FROM unnest($2::bigint[], $3::uuid[], $4::bytea[])
), nodes AS (
    INSERT INTO ledger_nodes (site_id, level, node_index, hash)
    SELECT $1, * FROM unnest($5::smallint[], $6::bigint[], $7::bytea[])
)
UPDATE ledger_state SET tree_size = $8, frontier = $9, root_hash = $10, updated_at = now()
WHERE site_id = $1
"""
# The same append naming the state it extends (size and root), for a caller that knows where the
# log last was: it locks the state row (waiting, as LOCK_STATE does, for a transaction that holds
# it, and then seeing the row as that one left it) and writes only if the log is at that state.
# Either way one row comes back: whether it was written, and the state found (now locked, so a
# caller whose guess was wrong appends on top of it with WRITE_APPEND); none if there is no state
# row this transaction can lock (the site has no log yet, or its first append is not committed).
WRITE_APPEND_AT = """
WITH locked AS (
    SELECT tree_size, frontier, root_hash FROM ledger_state WHERE site_id = $1 FOR UPDATE
), state AS (
    UPDATE ledger_state SET tree_size = $8, frontier = $9, root_hash = $10, updated_at = now()
    WHERE site_id = $1
      AND EXISTS (SELECT FROM locked l WHERE l.tree_size = $11 AND l.root_hash = $12)
    RETURNING site_id
), leaves AS (
    INSERT INTO ledger_leaves (site_id, leaf_index, event_id, leaf_hash)
    SELECT $1, * FROM unnest($2::bigint[], $3::uuid[], $4::bytea[])
    WHERE EXISTS (SELECT FROM state)
), nodes AS (
    INSERT INTO ledger_nodes (site_id, level, node_index, hash)
    SELECT $1, * FROM unnest($5::smallint[], $6::bigint[], $7::bytea[])
    WHERE EXISTS (SELECT FROM state)
)
SELECT EXISTS (SELECT FROM state) AS written, tree_size, frontier FROM locked
"""
SELECT_LEAVES_AT = """
SELECT leaf_index, leaf_hash FROM ledger_leaves
WHERE site_id = $1 AND leaf_index = ANY($2::bigint[])
"""
SELECT_NODES_AT = """
SELECT n.level, n.node_index, n.hash
FROM ledger_nodes n
JOIN unnest($2::smallint[], $3::bigint[]) AS k(level, node_index)
  ON n.level = k.level AND n.node_index = k.node_index
WHERE n.site_id = $1
"""
SELECT_LEAF_BY_EVENT = """
SELECT leaf_index, event_id, leaf_hash FROM ledger_leaves WHERE site_id = $1 AND event_id = $2
"""
SELECT_LEAF_BY_INDEX = """
SELECT leaf_index, event_id, leaf_hash FROM ledger_leaves WHERE site_id = $1 AND leaf_index = $2
"""

# The columns an entry binds. record_digest is SHA-256 over PostgreSQL's own text form of the
# stored jsonb payload (jsonb_out is deterministic for a jsonb value: keys sorted, one space
# after ':' and ','), computed the same way at append and at verification.
SELECT_LEDGER_EVENTS = """
SELECT e.event_id, e.event_type, e.waybill_no, e.occurred_at, e.payload_digest,
       sha256(convert_to(e.payload::text, 'UTF8')) AS record_digest
FROM events e
WHERE e.site_id = $1 AND e.event_id = ANY($2::uuid[])
"""
SELECT_AUDIT_LEAVES = """
SELECT l.leaf_index, l.event_id, l.leaf_hash, e.event_id IS NOT NULL AS present,
       e.event_type, e.waybill_no, e.occurred_at, e.payload_digest,
       sha256(convert_to(e.payload::text, 'UTF8')) AS record_digest
FROM ledger_leaves l
LEFT JOIN events e ON e.site_id = l.site_id AND e.event_id = l.event_id
WHERE l.site_id = $1
ORDER BY l.leaf_index
"""
UNLOGGED_REPORTED = 10_000  # events without a leaf named in one report, at most
SELECT_UNLOGGED = """
SELECT e.event_id, e.event_type, e.waybill_no, e.occurred_at, e.payload_digest,
       sha256(convert_to(e.payload::text, 'UTF8')) AS record_digest
FROM events e
WHERE e.site_id = $1
  AND NOT EXISTS (SELECT 1 FROM ledger_leaves l
                  WHERE l.site_id = e.site_id AND l.event_id = e.event_id)
ORDER BY e.received_at, e.event_id
LIMIT $2
"""

INSERT_CHECKPOINT = """
INSERT INTO ledger_checkpoints (site_id, tree_size, root_hash, note) VALUES ($1, $2, $3, $4)
ON CONFLICT (site_id, tree_size) DO NOTHING
"""
SELECT_CHECKPOINT_AT = """
SELECT site_id, tree_size, root_hash, note, created_at FROM ledger_checkpoints
WHERE site_id = $1 AND tree_size = $2
"""
SELECT_LATEST_CHECKPOINT = """
SELECT site_id, tree_size, root_hash, note, created_at FROM ledger_checkpoints
WHERE site_id = $1 ORDER BY tree_size DESC LIMIT 1
"""

AUDIT_PREFETCH = 2000  # rows per cursor round trip while verifying


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A site's log at one size: RFC 9162 root hash of its first ``tree_size`` leaves."""

    tree_size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an append landed: leaves ``first_index .. tree_size - 1``, and the new root."""

    first_index: int
    tree_size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class LedgerLeaf:
    leaf_index: int
    event_id: UUID
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    site_id: str
    tree_size: int
    root_hash: bytes
    note: str  # the signed note, as published
    created_at: datetime


# --- appends ---------------------------------------------------------------------------


@dataclass
class LedgerTips:
    """Where this process last left each site's log, so that its next append there can name
    the state it extends (``append_entries(tips=...)``).

    An append without a tip locks and reads the site's state row, then writes: two round trips,
    and the site's lock is held across the wait for the reply to the first (on a busy event loop,
    milliseconds) while every other append to the site queues behind it. With a tip, one
    statement locks the row, checks that the log is at the tip's state and writes
    (``WRITE_APPEND_AT``). A tip is recorded as its append is sent, so concurrent appends of one
    process chain on each other: the later one waits in the database for the earlier one's
    commit, then goes ahead at once. A wrong tip (another process appended, or an append it
    extended was rolled back) costs no more round trips than no tip: the statement has locked
    and read the state, and the append is written on top of it. It does cost its leaves hashed
    into the tree and sent a second time, so after a wrong tip the site's appends take the
    locked path until one of them finds the log where this process left it: where several
    processes append to one site in turn, none keeps paying for guesses that fail.
    """

    _states: dict[str, tuple[CompactRange, bytes, bool]] = field(default_factory=dict)

    def left_at(self, site_id: str) -> tuple[CompactRange, bytes] | None:
        """The state this process last left the site's log in, and its root."""
        entry = self._states.get(site_id)
        return None if entry is None else (entry[0], entry[1])

    def guess(self, site_id: str) -> tuple[CompactRange, bytes] | None:
        """``left_at``, while it is worth naming: unless a guess there failed and no locked
        read has found the log where this process left it since."""
        entry = self._states.get(site_id)
        return None if entry is None or not entry[2] else (entry[0], entry[1])

    def found(self, site_id: str, state: CompactRange) -> bool:
        """Whether a locked read's ``state`` is where this process left the log (or it has
        left none there yet)."""
        entry = self._states.get(site_id)
        return entry is None or entry[0] == state

    def left(self, site_id: str, state: CompactRange, root: bytes, *, trusted: bool) -> None:
        """Record an append as it is sent; ``trusted``: worth naming by the next one."""
        self._states[site_id] = (state, root, trusted)

    def forget(self, site_id: str) -> None:
        self._states.pop(site_id, None)


async def append_entries(
    conn: Conn,
    site_id: str,
    entries: Sequence[tuple[UUID, bytes]],
    tips: LedgerTips | None = None,
) -> AppendResult:
    """Append ledger entries (event id, ``canonical_entry`` bytes) to the site's log, in order.

    Locks the site's state row for the rest of the caller's transaction, so appends to one site
    are serialised and leaf indexes are dense; appends to different sites do not contend.
    Callers appending to several sites in one transaction must do so in a fixed order (sorted
    site ids, as ``append_accepted`` does) so that two transactions cannot deadlock. ``tips``
    (one per process): an append that can name the state it extends takes one round trip.
    """
    ids = [event_id for event_id, _ in entries]
    if len(set(ids)) != len(ids):
        raise DuplicateEntryError(f"an event appears twice in one append to site {site_id}")
    # Hashed before the lock is taken: appends to one site wait for each other from the lock
    # to the commit, so only what needs the locked state belongs in between.
    leaves = [leaf_hash(entry) for _, entry in entries]
    tip = tips.guess(site_id) if tips is not None and leaves else None
    try:
        if tips is None or tip is None:
            state = await _lock_state(conn, site_id)
            ours = tips is not None and tips.found(site_id, state)
        else:
            base, base_root = tip
            new_state, completed = base.extend(leaves)
            root = new_state.root()
            # Before the await: the next append of this process extends this one.
            tips.left(site_id, new_state, root, trusted=True)
            row = await conn.fetchrow(
                WRITE_APPEND_AT,
                *_append_arguments(site_id, base, new_state, completed, ids, leaves, root),
                base.size, base_root,
            )  # fmt: skip
            if row is not None and row["written"]:
                return AppendResult(base.size, new_state.size, root)
            # The log was elsewhere; the row is locked now (or there is none yet).
            state = _compact_range(row) if row is not None else await _lock_state(conn, site_id)
            ours = False
        if not leaves:
            return AppendResult(state.size, state.size, state.root())
        new_state, completed = state.extend(leaves)
        root = new_state.root()
        if tips is not None:
            tips.left(site_id, new_state, root, trusted=ours)
        await conn.execute(
            WRITE_APPEND,
            *_append_arguments(site_id, state, new_state, completed, ids, leaves, root),
        )
    except BaseException as exc:  # the transaction is lost: so is what the tip says
        if tips is not None:
            tips.forget(site_id)
        if isinstance(exc, asyncpg.UniqueViolationError):
            raise DuplicateEntryError(f"an event is already in the log of site {site_id}") from exc
        raise
    return AppendResult(state.size, new_state.size, root)


async def _lock_state(conn: Conn, site_id: str) -> CompactRange:
    """Lock the site's state row for the rest of the transaction and read it."""
    # The first append of a site creates its state row. Concurrent first appends both find no
    # row and both INSERT: the loser waits for the winner's commit and inserts nothing (ON
    # CONFLICT DO NOTHING), then both lock the one row in turn.
    row = await conn.fetchrow(LOCK_STATE, site_id)
    if row is None:
        await conn.execute(ENSURE_STATE, site_id, EMPTY_ROOT)
        row = await conn.fetchrow(LOCK_STATE, site_id)
    if row is None:  # pragma: no cover - the row was just ensured
        raise LedgerCorruptError(f"no ledger state for site {site_id}")
    return _compact_range(row)


def _append_arguments(
    site_id: str,
    base: CompactRange,
    new_state: CompactRange,
    completed: list[tuple[Node, bytes]],
    ids: list[UUID],
    leaves: list[bytes],
    root: bytes,
) -> tuple[Any, ...]:
    """The parameters $1..$10 of WRITE_APPEND and WRITE_APPEND_AT: the new leaves, the tile
    nodes they completed and the new state."""
    return (
        site_id,
        list(range(base.size, new_state.size)),
        ids,
        leaves,
        [level for (level, _), _ in completed],
        [index for (_, index), _ in completed],
        [h for _, h in completed],
        new_state.size,
        list(new_state.hashes),
        root,
    )


async def load_ledger_events(
    conn: Conn, site_id: str, event_ids: Sequence[UUID]
) -> list[LedgerEvent]:
    """The stored events' ledger columns, in the order of ``event_ids``."""
    rows = await conn.fetch(SELECT_LEDGER_EVENTS, site_id, list(event_ids))
    by_id = {r["event_id"]: _ledger_event(site_id, r["event_id"], r) for r in rows}
    missing = [str(i) for i in event_ids if i not in by_id]
    if missing:
        raise LedgerEntryError(f"events not stored for site {site_id}: {', '.join(missing)}")
    return [by_id[i] for i in event_ids]


async def append_events(
    conn: Conn,
    site_id: str,
    event_ids: Sequence[UUID],
    entry_for_event: Callable[[LedgerEvent], bytes] = event_entry,
) -> AppendResult:
    """Append already-inserted events of one site, reading their entries back from ``events``.

    Reading the rows back (in the same transaction) derives each entry exactly as
    ``verify_site`` will, including the digest of the payload as PostgreSQL stores it.
    """
    events = await load_ledger_events(conn, site_id, event_ids)
    return await append_entries(conn, site_id, [(e.event_id, entry_for_event(e)) for e in events])


async def append_accepted(conn: Conn, keys: Sequence[tuple[str, UUID]]) -> dict[str, AppendResult]:
    """Append newly accepted events, given as (site_id, event_id) in acceptance order.

    Sites are locked in sorted order (no deadlocks between gateways); within a site, the
    leaves keep the order of ``keys``. The site locks are held until the caller commits, so
    make this the last write of the transaction: it then serialises only the commit itself.
    """
    by_site: dict[str, list[UUID]] = {}
    for site_id, event_id in keys:
        by_site.setdefault(site_id, []).append(event_id)
    return {site: await append_events(conn, site, by_site[site]) for site in sorted(by_site)}


async def append_stored(
    conn: Conn, entries: Sequence[tuple[str, UUID, bytes]], tips: LedgerTips | None = None
) -> dict[str, AppendResult]:
    """Append the entries of newly stored events: (site_id, event_id, ``canonical_entry``).

    The call for ``commit_events``: ``insert_events`` returns each new row's ``record_digest``
    as PostgreSQL stored it (over the stored jsonb, as ``verify_site`` derives it) and the other
    columns are the values just written, so no second read of the rows is needed. Same ordering
    and locking as ``append_accepted``: sites in sorted order, leaves in the order given.
    ``tips``: see ``append_entries``.
    """
    by_site: dict[str, list[tuple[UUID, bytes]]] = {}
    for site_id, event_id, entry in entries:
        by_site.setdefault(site_id, []).append((event_id, entry))
    return {
        site: await append_entries(conn, site, items, tips)
        for site, items in sorted(by_site.items())
    }


# --- tree heads and proofs -----------------------------------------------------------------


async def ledger_state(conn: Conn, site_id: str) -> CompactRange:
    row = await conn.fetchrow(SELECT_STATE, site_id)
    return CompactRange() if row is None else _compact_range(row)


async def latest_root(conn: Conn, site_id: str) -> TreeHead:
    """The site's current tree head (size 0 and SHA-256("") before its first append)."""
    row = await conn.fetchrow(SELECT_STATE, site_id)
    if row is None:
        return TreeHead(0, EMPTY_ROOT)
    return TreeHead(row["tree_size"], bytes(row["root_hash"]))


async def sites_to_checkpoint(conn: Conn) -> list[str]:
    """Sites whose log grew since their latest checkpoint (or that have none yet)."""
    return [r["site_id"] for r in await conn.fetch(SELECT_UNSIGNED_SITES)]


async def root_at(conn: Conn, site_id: str, tree_size: int) -> bytes:
    """MTH of the site's first ``tree_size`` leaves, from stored hashes."""
    await _check_size(conn, site_id, tree_size)
    if tree_size == 0:
        return EMPTY_ROOT
    return (await _resolve(conn, site_id, ProofPlan(((0, tree_size),))))[0]


async def inclusion_proof(conn: Conn, site_id: str, leaf_index: int, tree_size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof of leaf ``leaf_index`` in the tree of ``tree_size``."""
    await _check_size(conn, site_id, tree_size)
    plan = ProofPlan(tuple(inclusion_ranges(leaf_index, tree_size)))
    return await _resolve(conn, site_id, plan)


async def consistency_proof(conn: Conn, site_id: str, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof from the tree of ``old_size`` to ``new_size``."""
    await _check_size(conn, site_id, new_size)
    plan = ProofPlan(tuple(consistency_ranges(old_size, new_size)))
    return await _resolve(conn, site_id, plan)


async def find_leaf(conn: Conn, site_id: str, event_id: UUID) -> LedgerLeaf | None:
    """The leaf of an event (for an inclusion proof by event id), if it was logged."""
    row = await conn.fetchrow(SELECT_LEAF_BY_EVENT, site_id, event_id)
    return None if row is None else LedgerLeaf(row[0], row[1], bytes(row[2]))


async def leaf_at(conn: Conn, site_id: str, leaf_index: int) -> LedgerLeaf | None:
    row = await conn.fetchrow(SELECT_LEAF_BY_INDEX, site_id, leaf_index)
    return None if row is None else LedgerLeaf(row[0], row[1], bytes(row[2]))


async def _check_size(conn: Conn, site_id: str, tree_size: int) -> None:
    current = (await latest_root(conn, site_id)).tree_size
    if not 0 <= tree_size <= current:
        raise ProofRequestError(f"the log of site {site_id} has {current} leaves, not {tree_size}")


async def _resolve(conn: Conn, site_id: str, plan: ProofPlan) -> list[bytes]:
    keys = plan.stored_keys()
    leaf_indexes = sorted(i for level, i in keys if level == 0)
    nodes = sorted(k for k in keys if k[0] > 0)
    stored: dict[Node, bytes] = {}
    if leaf_indexes:
        for r in await conn.fetch(SELECT_LEAVES_AT, site_id, leaf_indexes):
            stored[(0, r["leaf_index"])] = bytes(r["leaf_hash"])
    if nodes:
        rows = await conn.fetch(
            SELECT_NODES_AT, site_id, [level for level, _ in nodes], [i for _, i in nodes]
        )
        for r in rows:
            stored[(r["level"], r["node_index"])] = bytes(r["hash"])
    return plan.resolve(stored)


# --- checkpoints -----------------------------------------------------------------------------


REPLACE_CHECKPOINT_NOTE = """
UPDATE ledger_checkpoints SET note = $4
WHERE site_id = $1 AND tree_size = $2 AND root_hash = $3
"""


async def replace_checkpoint_note(
    conn: Conn, site_id: str, checkpoint: Checkpoint, note: str
) -> None:
    """Re-sign the site's checkpoint of this size and root in place (an adopted key or a
    renamed log, with no leaf since): the same size and root, so nothing it proved changes."""
    await conn.execute(
        REPLACE_CHECKPOINT_NOTE, site_id, checkpoint.tree_size, checkpoint.root_hash, note
    )


async def save_checkpoint(
    conn: Conn, site_id: str, checkpoint: Checkpoint, note: str
) -> StoredCheckpoint:
    """Store a signed checkpoint; a second one at the same size keeps the first.

    Two different roots at one size would be a split view of the log: refused.
    """
    await conn.execute(INSERT_CHECKPOINT, site_id, checkpoint.tree_size, checkpoint.root_hash, note)
    stored = await checkpoint_at(conn, site_id, checkpoint.tree_size)
    if stored is None:  # pragma: no cover - inserted or present just above
        raise LedgerCorruptError("checkpoint vanished after saving")
    if stored.root_hash != checkpoint.root_hash:
        raise LedgerInconsistentError(
            f"site {site_id} already has a checkpoint of size {checkpoint.tree_size} "
            "with another root"
        )
    return stored


async def checkpoint_at(conn: Conn, site_id: str, tree_size: int) -> StoredCheckpoint | None:
    row = await conn.fetchrow(SELECT_CHECKPOINT_AT, site_id, tree_size)
    return None if row is None else _checkpoint(row)


async def latest_checkpoint(conn: Conn, site_id: str) -> StoredCheckpoint | None:
    row = await conn.fetchrow(SELECT_LATEST_CHECKPOINT, site_id)
    return None if row is None else _checkpoint(row)


# --- verification ----------------------------------------------------------------------------


async def verify_site(
    conn: Conn,
    site_id: str,
    checkpoint: Checkpoint,
    entry_for_event: Callable[[LedgerEvent], bytes] = event_entry,
    *,
    expected_origin: str | None = None,
) -> VerificationReport:
    """Check the site's CURRENT event rows and stored leaves against a trusted checkpoint.

    Each leaf's entry is re-derived from its event row as it is now and compared with the
    stored leaf hash; the roots over the re-derived entries and over the stored leaves are
    compared with the checkpoint's root (the only thing trusted). Names altered, removed and
    reordered records, events without a leaf, and leaves missing or beyond the checkpoint.
    Run inside a transaction for one consistent snapshot (REPEATABLE READ); without one, this
    opens a read-only REPEATABLE READ transaction itself.
    """
    if not conn.is_in_transaction():
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await verify_site(
                conn, site_id, checkpoint, entry_for_event, expected_origin=expected_origin
            )
    audit = SiteAudit(site_id, checkpoint.tree_size, checkpoint.root_hash, entry_for_event)
    async for r in conn.cursor(SELECT_AUDIT_LEAVES, site_id, prefetch=AUDIT_PREFETCH):
        event = _ledger_event(site_id, r["event_id"], r) if r["present"] else None
        audit.add_leaf(r["leaf_index"], r["event_id"], bytes(r["leaf_hash"]), event)
    for r in await conn.fetch(SELECT_UNLOGGED, site_id, UNLOGGED_REPORTED):
        audit.add_unlogged(_ledger_event(site_id, r["event_id"], r))
    state: CompactRange | None = None  # unreadable: reported as not matching the leaves
    row = await conn.fetchrow(SELECT_STATE, site_id)
    with contextlib.suppress(LedgerCorruptError):  # a frontier of the wrong shape
        state = CompactRange() if row is None else _compact_range(row)
    if row is not None and state is not None and bytes(row["root_hash"]) != state.root():
        state = None  # the head root that checkpoints are signed from is not the frontier's
    origin_ok = expected_origin is None or checkpoint.origin == expected_origin
    return audit.finish(state, origin_matches=origin_ok)


# --- rows to values --------------------------------------------------------------------------


def _compact_range(row: asyncpg.Record) -> CompactRange:
    return CompactRange(row["tree_size"], tuple(bytes(h) for h in row["frontier"]))


def _ledger_event(site_id: str, event_id: UUID, r: asyncpg.Record) -> LedgerEvent:
    return LedgerEvent(
        site_id=site_id,
        event_id=event_id,
        event_type=r["event_type"],
        waybill_no=r["waybill_no"],
        occurred_at=r["occurred_at"],
        payload_digest=bytes(r["payload_digest"]),
        record_digest=bytes(r["record_digest"]),
    )


def _checkpoint(r: asyncpg.Record) -> StoredCheckpoint:
    return StoredCheckpoint(
        r["site_id"], r["tree_size"], bytes(r["root_hash"]), r["note"], r["created_at"]
    )
