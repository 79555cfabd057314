"""RFC 9162 Merkle hashing and proofs, the compact range, tiled proof plans and ledger entries."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.domain.ledger import (
    EMPTY_ROOT,
    CompactRange,
    LedgerCorruptError,
    LedgerEntryError,
    Node,
    ProofPlan,
    ProofRequestError,
    canonical_entry,
    consistency_proof,
    consistency_ranges,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

MAX = 300
LEAVES = [leaf_hash(b"entry %d" % i) for i in range(MAX)]
ROOTS = [merkle_root(LEAVES[:n]) for n in range(MAX + 1)]
FAST = settings(max_examples=150, deadline=None)


def flip(data: bytes, position: int, bit: int) -> bytes:
    i = position % len(data)
    return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]


# --- known values ----------------------------------------------------------------------------


def test_empty_tree_hash_is_sha256_of_the_empty_string() -> None:
    assert merkle_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert CompactRange().root() == EMPTY_ROOT


def test_one_leaf_tree_hash_is_the_prefixed_leaf_hash() -> None:
    assert merkle_root([leaf_hash(b"")]) == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


# The reference inputs and roots of the RFC 6962 test suite (certificate-transparency).
RFC6962_INPUTS = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                  "606162636465666768696a6b6c6d6e6f"]  # fmt: skip
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("size", range(1, 9))
def test_tree_hashes_match_the_rfc6962_reference_vectors(size: int) -> None:
    leaves = [leaf_hash(bytes.fromhex(x)) for x in RFC6962_INPUTS[:size]]
    assert merkle_root(leaves).hex() == RFC6962_ROOTS[size - 1]
    assert CompactRange.from_leaves(leaves).root().hex() == RFC6962_ROOTS[size - 1]


def test_proof_shapes_follow_the_rfc_recursion() -> None:
    # RFC 9162 §2.1.5 example tree of 7 leaves a..g: PATH(0) = [b, h(c,d), h(e,f,g)] ...
    assert inclusion_ranges(0, 7) == [(1, 2), (2, 4), (4, 7)]
    assert inclusion_ranges(3, 7) == [(2, 3), (0, 2), (4, 7)]
    assert inclusion_ranges(4, 7) == [(5, 6), (6, 7), (0, 4)]
    assert inclusion_ranges(6, 7) == [(4, 6), (0, 4)]
    # ... and the consistency proofs between its versions of 3, 4 and 6 leaves.
    assert consistency_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert consistency_ranges(4, 7) == [(4, 7)]
    assert consistency_ranges(6, 7) == [(4, 6), (6, 7), (0, 4)]


# --- proofs verify ---------------------------------------------------------------------------


def test_every_proof_verifies_in_trees_up_to_40_leaves() -> None:
    for n in range(1, 41):
        for i in range(n):
            proof = inclusion_proof(LEAVES, i, n)
            assert verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n]), (i, n)
        for m in range(n + 1):
            proof = consistency_proof(LEAVES, m, n)
            assert verify_consistency(m, n, ROOTS[m], ROOTS[n], proof), (m, n)


@FAST
@given(st.data())
def test_inclusion_proofs_verify_for_every_leaf_up_to_300(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX), label="n")
    i = data.draw(st.integers(0, n - 1), label="i")
    proof = inclusion_proof(LEAVES, i, n)
    assert verify_inclusion(LEAVES[i], i, n, proof, ROOTS[n])
    if n > 1:
        other = (i + 1) % n
        assert not verify_inclusion(LEAVES[other], i, n, proof, ROOTS[n])  # wrong leaf


@FAST
@given(st.data())
def test_consistency_proofs_verify_for_all_sizes_up_to_300(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, MAX), label="n")
    m = data.draw(st.integers(1, n), label="m")
    proof = consistency_proof(LEAVES, m, n)
    assert verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)
    if m < n:
        assert not verify_consistency(m, n, ROOTS[m + 1], ROOTS[n], proof)


@FAST
@given(st.data(), st.integers(0, 31), st.integers(0, 7))
def test_a_flipped_byte_anywhere_fails_inclusion(data: st.DataObject, pos: int, bit: int) -> None:
    n = data.draw(st.integers(2, MAX), label="n")
    i = data.draw(st.integers(0, n - 1), label="i")
    proof = inclusion_proof(LEAVES, i, n)
    k = data.draw(st.integers(0, len(proof) - 1), label="k")
    bad_proof = [*proof[:k], flip(proof[k], pos, bit), *proof[k + 1 :]]
    assert not verify_inclusion(LEAVES[i], i, n, bad_proof, ROOTS[n])
    assert not verify_inclusion(flip(LEAVES[i], pos, bit), i, n, proof, ROOTS[n])
    assert not verify_inclusion(LEAVES[i], i, n, proof, flip(ROOTS[n], pos, bit))
    assert not verify_inclusion(LEAVES[i], i, n, proof[:-1], ROOTS[n])  # truncated proof


@FAST
@given(st.data(), st.integers(0, 31), st.integers(0, 7))
def test_a_flipped_byte_anywhere_fails_consistency(data: st.DataObject, pos: int, bit: int) -> None:
    n = data.draw(st.integers(2, MAX), label="n")
    m = data.draw(st.integers(1, n - 1), label="m")
    proof = consistency_proof(LEAVES, m, n)
    k = data.draw(st.integers(0, len(proof) - 1), label="k")
    bad_proof = [*proof[:k], flip(proof[k], pos, bit), *proof[k + 1 :]]
    assert not verify_consistency(m, n, ROOTS[m], ROOTS[n], bad_proof)
    assert not verify_consistency(m, n, flip(ROOTS[m], pos, bit), ROOTS[n], proof)
    assert not verify_consistency(m, n, ROOTS[m], flip(ROOTS[n], pos, bit), proof)
    assert not verify_consistency(m, n, ROOTS[m], ROOTS[n], proof[:-1])


def test_degenerate_consistency_cases() -> None:
    assert verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[6], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[1]])
    assert verify_consistency(0, 9, EMPTY_ROOT, ROOTS[9], [])
    assert not verify_consistency(6, 5, ROOTS[6], ROOTS[5], [])
    with pytest.raises(ProofRequestError):
        consistency_ranges(6, 5)
    with pytest.raises(ProofRequestError):
        inclusion_ranges(5, 5)


# --- tampering with leaves changes the root --------------------------------------------------


@FAST
@given(st.data())
def test_deleting_or_swapping_leaves_changes_the_root(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, MAX), label="n")
    i = data.draw(st.integers(0, n - 1), label="i")
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i), label="j")
    leaves = LEAVES[:n]
    deleted = leaves[:i] + leaves[i + 1 :]
    swapped = list(leaves)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    assert merkle_root(deleted) != ROOTS[n]
    assert merkle_root(swapped) != ROOTS[n]
    # Deleting one and appending another to keep the size is caught too.
    assert merkle_root([*deleted, leaf_hash(b"forged")]) != ROOTS[n]


# --- compact range and tiled plans -----------------------------------------------------------


@FAST
@given(st.lists(st.integers(0, 40), max_size=15), st.sampled_from([1, 2, 3, 8]))
def test_incremental_appends_give_the_from_scratch_tree_hash(
    batches: list[int], height: int
) -> None:
    state = CompactRange()
    size = 0
    for b in batches:
        b = min(b, MAX - size)
        state, _ = state.extend(LEAVES[size : size + b], height)
        size += b
        assert state.size == size
        assert len(state.hashes) == size.bit_count()  # O(log n) state
        assert state.root() == ROOTS[size]


def stored_hashes(n: int, height: int) -> dict[Node, bytes]:
    """What the store keeps: leaves (level 0) and completed subtrees every `height` levels."""
    stored: dict[Node, bytes] = {(0, i): h for i, h in enumerate(LEAVES[:n])}
    state = CompactRange()
    for k in range(0, n, 7):  # appended in uneven batches, as ingest groups arrive
        state, nodes = state.extend(LEAVES[k : min(n, k + 7)], height)
        stored.update(nodes)
    return stored


@FAST
@given(st.data(), st.sampled_from([1, 2, 3, 8]))
def test_tiled_proof_plans_give_the_rfc_proofs(data: st.DataObject, height: int) -> None:
    n = data.draw(st.integers(1, MAX), label="n")
    stored = stored_hashes(n, height)
    i = data.draw(st.integers(0, n - 1), label="i")
    m = data.draw(st.integers(0, n), label="m")
    plan = ProofPlan(tuple(inclusion_ranges(i, n)), height)
    assert plan.resolve({k: stored[k] for k in plan.stored_keys()}) == inclusion_proof(LEAVES, i, n)
    plan = ProofPlan(tuple(consistency_ranges(m, n)), height)
    assert plan.resolve(stored) == consistency_proof(LEAVES, m, n)
    assert ProofPlan(((0, n),), height).resolve(stored) == [ROOTS[n]]


def test_a_plan_reads_few_stored_hashes_in_a_big_tree() -> None:
    n = 3_000_000  # a busy month
    plan = ProofPlan(tuple(inclusion_ranges(1_234_567, n)))
    assert len(plan.stored_keys()) < 1000
    plan = ProofPlan(tuple(consistency_ranges(1_000_003, n)))
    assert len(plan.stored_keys()) < 2000


def test_a_missing_stored_hash_is_reported_not_guessed() -> None:
    stored = stored_hashes(20, 2)
    del stored[(0, 3)]
    with pytest.raises(LedgerCorruptError):
        ProofPlan(tuple(inclusion_ranges(2, 20)), 2).resolve(stored)


def test_a_frontier_of_the_wrong_shape_is_corrupt() -> None:
    with pytest.raises(LedgerCorruptError):
        CompactRange(3, (LEAVES[0],))


# --- ledger entries --------------------------------------------------------------------------

EVENT = {
    "site_id": "S001",
    "event_id": UUID("12345678-1234-5678-1234-567812345678"),
    "event_type": "inspection.completed",
    "waybill_no": "YT1234567890123",
    "occurred_at": datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC),
    "payload_digest": bytes(range(32)),
    "record_digest": hashlib.sha256(b'{"result": "pass"}').digest(),
}


def test_an_entry_is_versioned_and_holds_no_waybill_in_clear() -> None:
    entry = canonical_entry(**EVENT)  # type: ignore[arg-type]
    assert entry[0] == 1
    assert b"YT1234567890123" not in entry
    assert hashlib.sha256(b"YT1234567890123").digest() in entry
    assert EVENT["event_id"].bytes in entry  # type: ignore[attr-defined]
    assert len(entry) == 1 + 5 + 16 + 21 + 8 + 32 + 33 + 32


def test_an_entry_keeps_its_layout_byte_for_byte() -> None:
    # Known answer: every stored leaf was hashed from this layout, so any rewrite of the encoder
    # must give these bytes again, or the stored logs no longer verify.
    assert canonical_entry(**EVENT).hex() == (  # type: ignore[arg-type]
        "0104533030311234567812345678123456781234567814696e7370656374696f6e2e636f6d706c6574"
        "656400064bf247911600aa28fd36255174c48faeb1cceba38575b9267de24512d3bfa2c2e6ad5c518b"
        "de20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f8a82ef08604e3b"
        "3b63aa9a58672bf141a7146bfb32b4aec7f06565b2bf1edc13"
    )


def test_an_entry_is_the_same_for_the_same_instant_in_any_time_zone() -> None:
    shanghai = timezone(timedelta(hours=8))
    moved = dict(EVENT, occurred_at=EVENT["occurred_at"].astimezone(shanghai))  # type: ignore[attr-defined]
    assert canonical_entry(**moved) == canonical_entry(**EVENT)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("site_id", "S002"),
        ("event_id", UUID(int=1)),
        ("event_type", "parcel.sealed"),
        ("waybill_no", "YT1234567890124"),
        ("occurred_at", EVENT["occurred_at"] + timedelta(microseconds=1)),  # type: ignore[operator]
        ("payload_digest", bytes(32)),
        ("record_digest", bytes(32)),
    ],
)
def test_changing_any_bound_field_changes_the_entry(field: str, value: object) -> None:
    assert canonical_entry(**dict(EVENT, **{field: value})) != canonical_entry(**EVENT)  # type: ignore[arg-type]


def test_a_naive_timestamp_cannot_make_an_entry() -> None:
    with pytest.raises(LedgerEntryError):
        canonical_entry(**dict(EVENT, occurred_at=datetime(2026, 3, 1)))  # type: ignore[arg-type]  # noqa: DTZ001


def test_fields_cannot_run_into_each_other() -> None:
    # Length prefixes keep ("S0", "01...") and ("S00", "1...") apart.
    a = canonical_entry(**dict(EVENT, site_id="S0", event_type="1inspection"))  # type: ignore[arg-type]
    b = canonical_entry(**dict(EVENT, site_id="S01", event_type="inspection"))  # type: ignore[arg-type]
    assert a != b


def test_inclusion_proof_rejects_sizes_beyond_the_leaves() -> None:
    with pytest.raises(ProofRequestError):
        inclusion_proof(LEAVES[:3], 0, 4)
