"""C2SP tlog-checkpoint bodies and signed notes with Ed25519: format, round trip, rejection."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from screening.domain.checkpoint import (
    Checkpoint,
    KeyFormatError,
    MalformedNoteError,
    NoteSigner,
    NoteVerifier,
    UnverifiedNoteError,
    key_id,
    open_note,
    parse_and_verify,
    sign_checkpoint,
    sign_note,
    site_origin,
)

SIGNER = NoteSigner.generate("screening.example/ledger")
VERIFIER = SIGNER.verifier()
ROOT = hashlib.sha256(b"root").digest()
CHECKPOINT = Checkpoint(site_origin("S001"), 20852163, ROOT)


def test_a_checkpoint_note_is_laid_out_exactly_as_c2sp_says() -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER)
    lines = note.split("\n")
    assert lines[0] == "screening.example/sites/S001"
    assert lines[1] == "20852163"
    assert lines[2] == base64.b64encode(ROOT).decode()
    assert lines[3] == ""  # the blank line ending the signed text
    assert lines[4].startswith("\u2014 screening.example/ledger ")  # em dash, space, name
    assert lines[5] == ""  # the note ends with a newline
    assert len(lines) == 6
    sig = base64.b64decode(lines[4].split(" ")[2])
    assert sig[:4] == VERIFIER.key_id
    assert len(sig) == 4 + 64
    assert VERIFIER.verify(CHECKPOINT.body().encode(), sig[4:])


def test_key_id_is_the_signed_note_ed25519_hash() -> None:
    expected = hashlib.sha256(b"screening.example/ledger\n\x01" + VERIFIER.public_key).digest()[:4]
    assert key_id("screening.example/ledger", VERIFIER.public_key) == expected
    name, hex_id, encoded = VERIFIER.vkey().split("+", 2)
    assert (name, hex_id) == ("screening.example/ledger", expected.hex())
    assert base64.b64decode(encoded) == b"\x01" + VERIFIER.public_key


# Test vector of golang.org/x/mod/sumdb/note (note_test.go): the reference implementation.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)


def test_notes_interoperate_with_the_go_reference_implementation() -> None:
    signer = NoteSigner.from_skey(GO_SKEY)
    assert signer.vkey() == GO_VKEY
    assert signer.skey() == GO_SKEY
    assert sign_note(GO_TEXT, [signer]) == GO_TEXT + "\n" + GO_SIG
    assert open_note(GO_TEXT + "\n" + GO_SIG, NoteVerifier.from_vkey(GO_VKEY)) == GO_TEXT


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF), min_size=1), max_size=3
    ),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="+"), min_size=1
    ),
)
def test_a_signed_checkpoint_round_trips(
    size: int, root: bytes, extensions: list[str], site: str
) -> None:
    checkpoint = Checkpoint(site_origin(site), size, root, tuple(extensions))
    note = sign_checkpoint(checkpoint, SIGNER)
    assert parse_and_verify(note, VERIFIER) == checkpoint
    assert parse_and_verify(note.encode(), VERIFIER) == checkpoint


def test_an_empty_tree_checkpoint_has_size_zero() -> None:
    checkpoint = Checkpoint("screening.example/sites/S9", 0, hashlib.sha256(b"").digest())
    assert checkpoint.body().split("\n")[1] == "0"
    assert parse_and_verify(sign_checkpoint(checkpoint, SIGNER), VERIFIER) == checkpoint


@pytest.mark.parametrize(
    ("original", "forged"),
    [
        ("20852163\n", "20852164\n"),  # tree size
        ("screening.example/sites/S001\n", "screening.example/sites/S002\n"),  # origin
    ],
)
def test_a_tampered_body_is_rejected(original: str, forged: str) -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER).replace(original, forged, 1)
    with pytest.raises(UnverifiedNoteError):
        parse_and_verify(note, VERIFIER)


def test_a_tampered_root_is_rejected() -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER)
    other = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(UnverifiedNoteError):
        parse_and_verify(note.replace(base64.b64encode(ROOT).decode(), other), VERIFIER)


def test_an_added_extension_line_is_rejected() -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER).replace("\n\n", "\nextra\n\n", 1)
    with pytest.raises(UnverifiedNoteError):
        parse_and_verify(note, VERIFIER)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 67), st.integers(0, 7))
def test_a_flipped_signature_bit_is_rejected(position: int, bit: int) -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER)
    body, sig_line = note.split("\n\n")
    prefix, encoded = sig_line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(encoded))
    raw[position] ^= 1 << bit
    forged = f"{body}\n\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    # A changed key ID makes it an unknown key's signature: ignored, so nothing verifies.
    with pytest.raises(UnverifiedNoteError):
        parse_and_verify(forged, VERIFIER)


def test_a_note_signed_by_another_key_is_rejected() -> None:
    other = NoteSigner.generate("screening.example/ledger")
    with pytest.raises(UnverifiedNoteError):
        parse_and_verify(sign_checkpoint(CHECKPOINT, other), VERIFIER)


def test_unknown_signatures_are_ignored_beside_the_trusted_one() -> None:
    witness = NoteSigner.generate("witness.example/w1")
    note = sign_note(CHECKPOINT.body(), [witness, SIGNER])
    assert parse_and_verify(note, VERIFIER) == CHECKPOINT


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.replace("\u2014", "-"),  # ASCII hyphen instead of the em dash
        lambda n: n.rstrip("\n"),  # no final newline
        lambda n: n.replace("\n\n", "\n"),  # no blank line
        lambda n: n.replace("20852163", "020852163"),  # leading zero
        lambda n: n.replace("S001", "S\x01"),  # control character
        lambda n: n.replace("\n\n", "\n\n\n"),  # blank signature line
    ],
)
def test_malformed_notes_are_rejected(mangle: object) -> None:
    note = sign_checkpoint(CHECKPOINT, SIGNER)
    with pytest.raises((MalformedNoteError, UnverifiedNoteError)):
        parse_and_verify(mangle(note), VERIFIER)  # type: ignore[operator]


def test_bodies_parse_strictly() -> None:
    good = CHECKPOINT.body()
    assert Checkpoint.from_body(good) == CHECKPOINT
    for bad in [
        good.replace("20852163", "-1"),
        good.replace("20852163", "2e7"),
        good.replace("20852163", str(2**64)),
        "only\ntwo\n",
        good + "\n",  # an empty extension line
        good.replace(base64.b64encode(ROOT).decode(), base64.b64encode(ROOT[:31]).decode()),
    ]:
        with pytest.raises(MalformedNoteError):
            Checkpoint.from_body(bad)


def test_verifier_keys_round_trip_and_bad_ones_are_refused() -> None:
    assert NoteVerifier.from_vkey(SIGNER.vkey()) == VERIFIER
    name, hex_id, encoded = SIGNER.vkey().split("+", 2)
    for bad in [
        f"{name}+00000000+{encoded}",  # key ID of another key
        f"{name}+{hex_id}",
        f"{name}+{hex_id}+" + base64.b64encode(b"\x02" + VERIFIER.public_key).decode(),
        f"other.example+{hex_id}+{encoded}",
    ]:
        with pytest.raises(KeyFormatError):
            NoteVerifier.from_vkey(bad)
    with pytest.raises(KeyFormatError):
        NoteSigner.generate("has space")
    with pytest.raises(KeyFormatError):
        site_origin("a+b")


def test_a_signature_spelt_in_non_canonical_base64_is_rejected() -> None:
    """The unused low bits before '=' decode the same when set: accepting them would let one
    checkpoint circulate as several different notes."""
    note = sign_checkpoint(CHECKPOINT, SIGNER)
    body, _, sig_line = note.rstrip("\n").rpartition("\n")
    prefix, _, encoded = sig_line.rpartition(" ")
    stripped = encoded.rstrip("=")
    assert len(encoded) - len(stripped) == 1  # 68 bytes: one '=', two unused bits before it
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet[alphabet.index(stripped[-1]) ^ 1]  # flip an unused bit
    respelt = stripped[:-1] + last + "="
    assert base64.b64decode(respelt) == base64.b64decode(encoded)
    with pytest.raises(MalformedNoteError):
        parse_and_verify(f"{body}\n{prefix} {respelt}\n", VERIFIER)
