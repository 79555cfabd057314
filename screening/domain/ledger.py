"""The per-site tamper-evident ledger: RFC 9162 Merkle tree hashing, proofs, entries and audits.

Pure: no I/O. Every accepted event is appended to its site's log as one leaf; the log is a Merkle
tree in the sense of RFC 9162 §2.1 (the same hashing as RFC 6962 / Certificate Transparency):

    leaf hash  = SHA-256(0x00 || entry)                                  RFC 9162 §2.1.1
    node hash  = SHA-256(0x01 || left || right)
    MTH({})    = SHA-256("")
    MTH(D[n])  = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of two < n

How the store stays compact and fast (a busy site appends millions of leaves a month):

* The **compact range** (``CompactRange``) of a tree of size n is the list of roots of the perfect
  subtrees on its right edge, one per set bit of n, largest first. Appending a leaf merges equal
  sized neighbours (amortised O(1), worst O(log n)) and the root is the right fold of that list
  (O(log n)). The store keeps only this list per site, so neither appending nor reading the
  current root ever touches older leaves.
* For proofs the store keeps the leaf hashes and, every ``TILE_HEIGHT`` levels, the hashes of the
  completed perfect subtrees (as C2SP tlog-tiles does with its 8-level tiles). Any perfect subtree
  is then the perfect tree over at most 2**(TILE_HEIGHT-1) stored hashes, so an inclusion or
  consistency proof reads O(2**TILE_HEIGHT · log n / TILE_HEIGHT) stored hashes whatever n is.
  ``ProofPlan`` says which stored hashes a proof needs and assembles it from them.

Proof generation follows the recursive definitions of RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1
(SUBPROOF); verification follows the iterative algorithms of §2.1.3.2 and §2.1.4.2 literally, so
the two halves check each other.

The ledger entry of an event (``canonical_entry``) and the audit of a site's stored records
against a trusted tree head (``SiteAudit``) live here too, so the storage edge only fetches rows.
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from uuid import UUID

HASH_SIZE = 32  # bytes; SHA-256
LEAF_PREFIX = b"\x00"  # RFC 9162 §2.1.1: domain separation of leaves ...
NODE_PREFIX = b"\x01"  # ... from interior nodes (second-preimage resistance)
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH({}) = SHA-256() (RFC 9162 §2.1.1)

# Levels at which completed perfect subtree hashes are stored, besides the leaves (level 0):
# 8, 16, 24, ... (the tile height of C2SP tlog-tiles). A perfect subtree of height h is then
# rebuilt from 2**(h mod 8) stored hashes, at most 128.
TILE_HEIGHT = 8

Range = tuple[int, int]  # leaves [start, end)
Node = tuple[
    int, int
]  # (level, index): the perfect subtree over leaves [index·2**level, +2**level)


class LedgerError(Exception):
    """Base of ledger failures.

    LedgerError
    ├── ProofRequestError        sizes or indexes the tree does not have
    │   └── LeafNotFoundError    an event that was never logged
    ├── LedgerCorruptError       stored ledger data inconsistent in itself
    ├── LedgerInconsistentError  the log does not extend a checkpoint it signed
    ├── DuplicateEntryError      an event appended twice to its site's log
    └── LedgerEntryError         an event that cannot become an entry
    """


class ProofRequestError(LedgerError):
    """A proof or tree head was asked for sizes or indexes the tree does not have."""


class LeafNotFoundError(ProofRequestError):
    """The event asked about has no leaf in the site's log."""


class LedgerCorruptError(LedgerError):
    """Stored ledger data is internally inconsistent (a missing hash, a frontier of wrong shape)."""


class LedgerInconsistentError(LedgerError):
    """The log no longer extends a tree head it already signed: it must not be signed again."""


class DuplicateEntryError(LedgerError):
    """An event is already in (or twice in one append to) its site's log."""


class LedgerEntryError(LedgerError):
    """An event cannot be turned into a ledger entry (e.g. a naive timestamp)."""


# --- RFC 9162 §2.1.1 hashing -------------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (RFC 9162 §2.1.1)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1), where MTH splits (RFC 9162 §2.1.1)."""
    if n < 2:
        raise ValueError("only a tree of two or more leaves splits")
    return 1 << ((n - 1).bit_length() - 1)


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves whose hashes are given: the recursive definition of RFC 9162 §2.1.1.

    O(n) hashes, recursion depth O(log n). It is the reference the incremental structures are
    tested against; for long streams ``CompactRange`` gives the same root in O(log n) memory.
    """

    def mth(start: int, end: int) -> bytes:
        n = end - start
        if n == 0:
            return EMPTY_ROOT
        if n == 1:
            return leaf_hashes[start]
        k = split_point(n)
        return node_hash(mth(start, start + k), mth(start + k, end))

    return mth(0, len(leaf_hashes))


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect tree over 2**h hashes at one level (pairwise, bottom up)."""
    level = list(hashes)
    if not level or len(level) & (len(level) - 1):
        raise ValueError(f"a perfect tree has a power-of-two width, not {len(level)}")
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def fold_subtrees(roots: Sequence[bytes]) -> bytes:
    """MTH of a range from the roots of its perfect-subtree decomposition, largest first.

    Because MTH always splits at the largest power of two, a tree of size n with n's binary
    digits b_1 > b_2 > ... is HASH(P_1, HASH(P_2, ... P_last)): a right fold.
    """
    if not roots:
        return EMPTY_ROOT
    acc = roots[-1]
    for h in reversed(roots[:-1]):
        acc = node_hash(h, acc)
    return acc


def range_subtrees(start: int, end: int) -> list[Node]:
    """The perfect subtrees, largest first, whose right fold is MTH(D[start:end]).

    Valid for the ranges RFC 9162's recursion produces, whose start is a multiple of a power of
    two at least as large as the range; anything else is refused rather than hashed wrongly.
    """
    if not 0 <= start <= end:
        raise ValueError(f"bad range [{start}, {end})")
    size = end - start
    if size and start % (1 << (size - 1).bit_length()):
        raise ValueError(f"range [{start}, {end}) is not aligned as in an RFC 9162 tree")
    nodes: list[Node] = []
    offset = start
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            nodes.append((level, offset >> level))
            offset += 1 << level
    return nodes


def stored_children(node: Node, height: int = TILE_HEIGHT) -> tuple[int, range]:
    """Which stored hashes rebuild a perfect subtree: (stored level, their index range).

    Stored levels are 0 (the leaves) and the positive multiples of ``height``.
    """
    level, index = node
    stored = level - level % height
    width = 1 << (level - stored)
    return stored, range(index * width, (index + 1) * width)


# --- compact range: O(log n) append and root -----------------------------------------------


@dataclass(frozen=True, slots=True)
class CompactRange:
    """The right-edge perfect subtree roots of a tree of ``size`` leaves, largest first.

    ``hashes[i]`` is the root of the subtree for the i-th set bit of ``size`` counted from the
    top, so ``len(hashes) == size.bit_count()``. This is all that appending needs.
    """

    size: int = 0
    hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.size < 0 or len(self.hashes) != self.size.bit_count():
            raise LedgerCorruptError(
                f"a compact range of size {self.size} has {self.size.bit_count()} hashes, "
                f"not {len(self.hashes)}"
            )
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise LedgerCorruptError("a compact range hash is not 32 bytes")

    @classmethod
    def from_leaves(cls, leaf_hashes: Iterable[bytes]) -> CompactRange:
        return cls().extend(leaf_hashes)[0]

    def root(self) -> bytes:
        """MTH of the whole tree, O(log n)."""
        return fold_subtrees(self.hashes)

    def extend(
        self, leaf_hashes: Iterable[bytes], height: int = TILE_HEIGHT
    ) -> tuple[CompactRange, list[tuple[Node, bytes]]]:
        """Append leaves; also return the perfect subtrees completed at stored levels.

        Returned nodes are those at positive multiples of ``height`` (leaves are stored
        separately by the caller). O(k + log n) hashes for k leaves.
        """
        size = self.size
        stack = list(self.hashes)
        completed: list[tuple[Node, bytes]] = []
        for h in leaf_hashes:
            if len(h) != HASH_SIZE:
                raise ValueError("a leaf hash is 32 bytes")
            # Adding 1 to size carries through its trailing one bits: each carry merges the two
            # smallest subtrees of equal height into one of the next height.
            level = 0
            index = size
            while size >> level & 1:
                h = node_hash(stack.pop(), h)
                level += 1
                index >>= 1
                if level % height == 0:
                    completed.append(((level, index), h))
            stack.append(h)
            size += 1
        return CompactRange(size, tuple(stack)), completed


class _Frontier:
    """A mutable compact range for streaming many leaves (``SiteAudit``); O(1) amortised push."""

    __slots__ = ("size", "stack")

    def __init__(self) -> None:
        self.size = 0
        self.stack: list[bytes] = []

    def push(self, h: bytes) -> None:
        carry = self.size
        while carry & 1:
            h = node_hash(self.stack.pop(), h)
            carry >>= 1
        self.stack.append(h)
        self.size += 1

    def root(self) -> bytes:
        return fold_subtrees(self.stack)

    def snapshot(self) -> CompactRange:
        return CompactRange(self.size, tuple(self.stack))


# --- RFC 9162 §2.1.3 inclusion and §2.1.4 consistency proofs -------------------------------


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose MTH form PATH(index, D[size]), in proof order (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < size:
        raise ProofRequestError(f"leaf {index} is not in a tree of size {size}")
    ranges: list[Range] = []
    start, end = 0, size
    # Walking down from the root meets the siblings top first; the proof lists them leaf first:
    # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])  or  PATH(m - k, D[k:n]) : MTH(D[0:k]).
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges whose MTH form PROOF(m, D[n]) = SUBPROOF(m, D[n], true) (RFC 9162 §2.1.4.1).

    For m == n and for m == 0 the proof is empty (any tree extends the empty tree).
    """
    if not 0 <= old_size <= new_size:
        raise ProofRequestError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[Range] = []
    start, end, m, complete = 0, new_size, old_size, True
    while end - start != m:
        k = split_point(end - start)
        if m <= k:  # SUBPROOF(m, D[0:k], b) : MTH(D[k:n])
            ranges.append((start + k, end))
            end = start + k
        else:  # SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])
            ranges.append((start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:  # SUBPROOF(m, D[m], false) = {MTH(D[m])}
        ranges.append((start, end))
    ranges.reverse()
    return ranges


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """A list of MTH(D[a:b]) to produce, and the stored hashes they are rebuilt from.

    The store fetches ``stored_keys()`` (leaves as level 0) and calls ``resolve``. Ranges
    come from ``inclusion_ranges``/``consistency_ranges`` or ``(0, size)`` for a root.
    """

    ranges: tuple[Range, ...]
    height: int = TILE_HEIGHT

    def stored_keys(self) -> set[Node]:
        keys: set[Node] = set()
        for start, end in self.ranges:
            for node in range_subtrees(start, end):
                stored, indexes = stored_children(node, self.height)
                keys.update((stored, i) for i in indexes)
        return keys

    def resolve(self, stored: Mapping[Node, bytes]) -> list[bytes]:
        out: list[bytes] = []
        for start, end in self.ranges:
            roots = []
            for node in range_subtrees(start, end):
                level, indexes = stored_children(node, self.height)
                try:
                    roots.append(perfect_root([stored[(level, i)] for i in indexes]))
                except KeyError as exc:
                    raise LedgerCorruptError(f"stored hash {exc.args[0]} is missing") from exc
            out.append(fold_subtrees(roots))
        return out


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) from a list of leaf hashes (in memory; O(size))."""
    if size > len(leaf_hashes):
        raise ProofRequestError(f"only {len(leaf_hashes)} leaves, not {size}")
    return [merkle_root(leaf_hashes[a:b]) for a, b in inclusion_ranges(index, size)]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) from a list of leaf hashes (in memory; O(new_size))."""
    if new_size > len(leaf_hashes):
        raise ProofRequestError(f"only {len(leaf_hashes)} leaves, not {new_size}")
    return [merkle_root(leaf_hashes[a:b]) for a, b in consistency_ranges(old_size, new_size)]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` show the leaf hash at ``index`` in the tree ``root``?"""
    if not 0 <= index < size or any(len(p) != HASH_SIZE for p in proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``new_root`` of ``new_size`` an extension of ``old_root``?

    Sizes the RFC leaves out are settled as transparency-dev/merkle does: equal sizes need an
    empty proof and equal roots; the empty tree is extended by anything, with an empty proof.
    """
    if not 0 <= old_size <= new_size or any(len(p) != HASH_SIZE for p in proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:  # step 1
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # step 2: first is an exact power of 2
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0  # step 7


# --- the ledger entry of an event -----------------------------------------------------------

ENTRY_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class LedgerEvent:
    """The columns of a stored event that its ledger entry binds (read from ``events``)."""

    site_id: str
    event_id: UUID
    event_type: str
    waybill_no: str
    occurred_at: datetime
    payload_digest: bytes  # events.payload_digest: keyed HMAC of the full payload
    record_digest: bytes  # SHA-256 of the stored, redacted payload (jsonb text)


_MICROSECOND = timedelta(microseconds=1)
_MICROS = struct.Struct(">q")


def _check_short(data: bytes, what: str) -> None:
    """An opaque<..255> field: its length goes in one byte."""
    if len(data) > 255:
        raise LedgerEntryError(f"{what} is longer than 255 bytes")


def canonical_entry(
    site_id: str,
    event_id: UUID,
    event_type: str,
    waybill_no: str,
    occurred_at: datetime,
    payload_digest: bytes,
    record_digest: bytes,
) -> bytes:
    """The ledger entry of an accepted event: identifiers and digests only, never personal data.

    Layout, in RFC 8446 presentation language (the TLS style RFC 9162 uses for its own entries)::

        struct {
            uint8  version = 1;
            opaque site_id<1..255>;          /* UTF-8 */
            opaque event_id[16];             /* the station's UUID, RFC 4122 byte order */
            opaque event_type<1..255>;       /* UTF-8, e.g. "inspection.completed" */
            int64  occurred_at;              /* µs since 1970-01-01T00:00Z, signed */
            opaque waybill_digest[32];       /* SHA-256(UTF-8 waybill_no) */
            opaque payload_digest<0..255>;   /* events.payload_digest */
            opaque record_digest[32];        /* SHA-256 of the stored redacted payload */
        } LedgerEntryV1;

    Why the keyed payload digest binds the event's content: it is the HMAC, under the gateway's
    secret key, of the whole event as the station sent it, personal data included, computed at
    ingest before redaction. The ledger cannot hold that content (it holds no personal data),
    but it holds this digest, so whoever keeps the key and the sealed personal data can show
    that a record is the one received, and any edit of the stored digest breaks the leaf. Being
    keyed, it also makes the entry unguessable: a leaf hash reveals nothing even about
    low-entropy fields such as the waybill number, so proofs can be handed to anyone.
    The separate columns (type, waybill, time) are bound in their own right because compliance
    reads them directly, and ``record_digest`` binds the redacted payload that compliance
    reads too (inspection result, verdict, ...), which the keyed digest alone cannot re-check.
    """
    if occurred_at.tzinfo is None:
        raise LedgerEntryError("occurred_at must be timezone-aware")
    if len(record_digest) != HASH_SIZE:
        raise LedgerEntryError("record_digest is a 32-byte SHA-256")
    _check_short(payload_digest, "payload_digest")
    micros = (occurred_at - _EPOCH) // _MICROSECOND
    return b"".join(
        (
            _site_field(site_id),
            event_id.bytes,
            _type_field(event_type),
            _MICROS.pack(micros),
            hashlib.sha256(waybill_no.encode()).digest(),
            bytes((len(payload_digest),)),
            payload_digest,
            record_digest,
        )
    )


# A log holds a few sites and six event types: their fields are encoded once, not per entry.
@functools.lru_cache(maxsize=4096)
def _site_field(site_id: str) -> bytes:
    """The entry's version, then ``site_id`` as an opaque<1..255>."""
    site = site_id.encode()
    _check_short(site, "site_id")
    return bytes((ENTRY_VERSION, len(site))) + site


@functools.lru_cache(maxsize=64)
def _type_field(event_type: str) -> bytes:
    kind = event_type.encode()
    _check_short(kind, "event_type")
    return bytes((len(kind),)) + kind


def event_entry(event: LedgerEvent) -> bytes:
    """``canonical_entry`` of a stored event."""
    return canonical_entry(
        event.site_id,
        event.event_id,
        event.event_type,
        event.waybill_no,
        event.occurred_at,
        event.payload_digest,
        event.record_digest,
    )


# --- auditing stored records against a trusted tree head ------------------------------------


class Swap(StrEnum):
    """What moved between two records for a reordering finding."""

    OCCURRED_AT = "occurred_at"  # the records' event times were exchanged
    IDENTITY = "event_id"  # the records' ids were exchanged (each id now names the other's data)


@dataclass(frozen=True, slots=True)
class RecordFinding:
    """One record that does not match its ledger leaf."""

    leaf_index: int
    event_id: UUID
    waybill_no: str | None = None  # None when the event row is gone


@dataclass(frozen=True, slots=True)
class ReorderFinding:
    """The record at ``leaf_index`` carries the ``swapped`` value logged for ``logged_as``."""

    leaf_index: int
    event_id: UUID
    logged_as: int
    logged_event_id: UUID
    swapped: Swap


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """The outcome of checking a site's stored records against a trusted tree head.

    The trusted tree head (from a signed checkpoint) is the only thing believed: the stored
    leaf hashes are checked against it like the events are.
    """

    site_id: str
    checkpoint_size: int
    stored_size: int  # leaves stored for the site
    # Root over entries recomputed from the CURRENT events rows, leaves [0, checkpoint_size):
    # this is the verdict on the records. False when any of those records is gone.
    entries_match_checkpoint: bool
    # Root over the stored leaf hashes [0, checkpoint_size): False means the ledger's own
    # leaves were rewritten (or lost).
    leaves_match_checkpoint: bool
    # The ledger state (compact range) agrees with the stored leaves.
    state_matches_leaves: bool
    altered: tuple[RecordFinding, ...] = ()  # event row changed since it was logged
    removed: tuple[RecordFinding, ...] = ()  # leaf whose event row is gone
    reordered: tuple[ReorderFinding, ...] = ()  # altered records explained by an exchange
    unlogged: tuple[RecordFinding, ...] = ()  # event rows with no leaf (leaf_index = -1)
    missing_leaves: tuple[int, ...] = ()  # gaps in the stored leaf indexes (capped)
    origin_matches: bool = True

    @property
    def short_of_checkpoint(self) -> int:
        """Leaves the checkpoint covers that are no longer stored (truncation)."""
        return max(0, self.checkpoint_size - self.stored_size)

    @property
    def beyond_checkpoint(self) -> int:
        """Leaves appended after the checkpoint (checked, but not covered by its signature)."""
        return max(0, self.stored_size - self.checkpoint_size)

    @property
    def ok(self) -> bool:
        return (
            self.entries_match_checkpoint
            and self.leaves_match_checkpoint
            and self.state_matches_leaves
            and self.origin_matches
            and not (self.altered or self.removed or self.reordered or self.unlogged)
            and not self.missing_leaves
            and self.short_of_checkpoint == 0
        )


# At most this many altered records are paired up to look for exchanges (the pairing is
# quadratic); above it, only records of the same parcel are paired.
REORDER_PAIRING_LIMIT = 256
MISSING_LEAVES_REPORTED = 1000


@dataclass
class SiteAudit:
    """Sans-I/O audit of one site: feed stored leaves in index order, then ``finish``.

    Memory is O(log n) plus the records that do not match, so a month of leaves can be
    streamed through it from a database cursor.
    """

    site_id: str
    checkpoint_size: int
    checkpoint_root: bytes
    entry_for_event: Callable[[LedgerEvent], bytes] = event_entry
    _stored: _Frontier = field(default_factory=_Frontier)
    _recomputed: _Frontier = field(default_factory=_Frontier)
    _stored_at_checkpoint: bytes | None = None
    _recomputed_at_checkpoint: bytes | None = None
    _records_complete: bool = True  # every leaf below the checkpoint had its event row
    _leaves_malformed: bool = False
    _expected_index: int = 0
    _missing: list[int] = field(default_factory=list)
    _mismatched: list[tuple[int, UUID, bytes, LedgerEvent]] = field(default_factory=list)
    _removed: list[RecordFinding] = field(default_factory=list)
    _unlogged: list[RecordFinding] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.checkpoint_size == 0:
            self._stored_at_checkpoint = self._recomputed_at_checkpoint = EMPTY_ROOT

    def add_leaf(
        self, leaf_index: int, event_id: UUID, stored_hash: bytes, event: LedgerEvent | None
    ) -> None:
        """One stored leaf (in increasing index order) and its current event row, if any."""
        if leaf_index < self._expected_index:
            raise ValueError("leaves must be fed in increasing index order")
        while self._expected_index < leaf_index:  # a gap: leaf rows deleted
            if len(self._missing) < MISSING_LEAVES_REPORTED:
                self._missing.append(self._expected_index)
            self._records_complete = False
            self._expected_index += 1
        self._expected_index += 1
        if len(stored_hash) != HASH_SIZE:  # a rewritten leaf row: no longer a SHA-256 at all
            self._leaves_malformed = True
            stored_hash = bytes(HASH_SIZE)
        self._stored.push(stored_hash)
        recomputed = stored_hash
        if event is None:
            self._removed.append(RecordFinding(leaf_index, event_id))
            self._records_complete = False
        else:
            recomputed = leaf_hash(self.entry_for_event(event))
            if recomputed != stored_hash:
                self._mismatched.append((leaf_index, event_id, stored_hash, event))
        self._recomputed.push(recomputed)
        if self._stored.size == self.checkpoint_size:
            self._stored_at_checkpoint = self._stored.root()
            self._recomputed_at_checkpoint = self._recomputed.root()

    def add_unlogged(self, event: LedgerEvent) -> None:
        """An event row of the site that has no leaf."""
        self._unlogged.append(RecordFinding(-1, event.event_id, event.waybill_no))

    def finish(
        self, state: CompactRange | None, *, origin_matches: bool = True
    ) -> VerificationReport:
        """The report; ``state`` is the stored compact range (None: unreadable, i.e. corrupt)."""
        complete_through_checkpoint = (
            self._records_complete and self._expected_index >= self.checkpoint_size
        )
        reordered, explained = self._pair_exchanges()
        altered = tuple(
            RecordFinding(i, eid, ev.waybill_no)
            for i, eid, _, ev in self._mismatched
            if i not in explained
        )
        leaves_intact = not self._missing and not self._leaves_malformed
        state_ok = leaves_intact and state == self._stored.snapshot()
        return VerificationReport(
            site_id=self.site_id,
            checkpoint_size=self.checkpoint_size,
            stored_size=self._stored.size,
            entries_match_checkpoint=complete_through_checkpoint
            and self._recomputed_at_checkpoint == self.checkpoint_root,
            leaves_match_checkpoint=leaves_intact
            and self._stored_at_checkpoint == self.checkpoint_root,
            state_matches_leaves=state_ok,
            altered=altered,
            removed=tuple(self._removed),
            reordered=reordered,
            unlogged=tuple(self._unlogged),
            missing_leaves=tuple(self._missing),
            origin_matches=origin_matches,
        )

    def _pair_exchanges(self) -> tuple[tuple[ReorderFinding, ...], set[int]]:
        """Explain mismatched records as exchanges of event time or identity between two records.

        For records a and b, "a holds b's time" means: a's row with b's occurred_at hashes to
        a's leaf; "a holds b's identity" means: a's row under b's event id hashes to b's leaf.
        """
        mism = self._mismatched
        if len(mism) < 2:
            return (), set()
        by_hash = {stored: (i, eid) for i, eid, stored, _ in mism}
        if len(mism) <= REORDER_PAIRING_LIMIT:
            groups = [mism]
        else:
            by_waybill: dict[str, list[tuple[int, UUID, bytes, LedgerEvent]]] = {}
            for m in mism:
                by_waybill.setdefault(m[3].waybill_no, []).append(m)
            groups = [g for g in by_waybill.values() if 1 < len(g) <= REORDER_PAIRING_LIMIT]
        found: list[ReorderFinding] = []
        explained: set[int] = set()
        for group in groups:
            for i, eid, stored, ev in group:
                for j, other_eid, _, other in group:
                    if i == j:
                        continue
                    moved_time = replace(ev, occurred_at=other.occurred_at)
                    if leaf_hash(self.entry_for_event(moved_time)) == stored:
                        found.append(ReorderFinding(i, eid, j, other_eid, Swap.OCCURRED_AT))
                        explained.add(i)
                        break
                    moved_id = replace(ev, event_id=other_eid)
                    if by_hash.get(leaf_hash(self.entry_for_event(moved_id))) == (j, other_eid):
                        found.append(ReorderFinding(i, eid, j, other_eid, Swap.IDENTITY))
                        explained.add(i)
                        break
        return tuple(found), explained
