"""Signed tree heads: C2SP tlog-checkpoint bodies in C2SP signed notes with Ed25519 signatures.

Pure: no I/O (keys are passed in). A checkpoint note looks like this (c2sp.org/tlog-checkpoint,
c2sp.org/signed-note)::

    screening.example/sites/S001            origin: which log
    20852163                                tree size, decimal, no leading zeros
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=   root hash, standard base64
                                            blank line: end of the signed text
    — screening.example/ledger Az3grl...=   em dash U+2014, key name, base64(key ID || sig)

The signed text is everything up to and including the newline before the blank line. The key
ID of an Ed25519 key is SHA-256(name || 0x0A || 0x01 || public key)[:4] (signed-note, "Ed25519
signatures"), and a verifier key is published as the string ``<name>+<hex key ID>+<base64(0x01
|| public key)>`` (the "vkey" of golang.org/x/mod/sumdb/note, which other C2SP tools read).

One key signs the checkpoints of every site, under one key name; each site is its own log with
its own origin. (tlog-checkpoint says the key name SHOULD match the origin; with one key for
many logs, one name that verifiers configure once is the simpler contract.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

DEFAULT_ORIGIN_PREFIX = "screening.example/sites"
ED25519_TYPE = 0x01  # signed-note signature type byte for Ed25519
SIGNATURE_PREFIX = "\u2014 "  # em dash, space (signed-note "Format")
MAX_SIGNATURES = 100  # signed-note: verifiers MUST accept at least 16
MAX_NOTE_BYTES = 1 << 16
HASH_SIZE = 32

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")  # no leading zeros; uint64 at most 20 digits
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # every ASCII control but newline
_SPACE = re.compile(r"\s")  # Unicode spaces (str patterns match Unicode whitespace)


class CheckpointError(Exception):
    """Base of checkpoint and signed-note failures.

    CheckpointError
    ├── MalformedNoteError      not a signed note / checkpoint in the C2SP format
    ├── UnverifiedNoteError     no signature from the trusted key (or its signature is bad)
    └── KeyFormatError          a key string that cannot be read
    """


class MalformedNoteError(CheckpointError):
    """The text is not a well-formed signed note or checkpoint body."""


class UnverifiedNoteError(CheckpointError):
    """The note carries no valid signature by the trusted key; its text must be ignored."""


class KeyFormatError(CheckpointError):
    """A verifier or signer key string (or key name) is malformed."""


def site_origin(site_id: str, prefix: str = DEFAULT_ORIGIN_PREFIX) -> str:
    """The origin line of a site's log, e.g. ``screening.example/sites/S001``."""
    origin = f"{prefix.rstrip('/')}/{site_id}"
    _check_name(origin, "origin")
    return origin


def _check_name(name: str, what: str) -> None:
    # signed-note: key names are non-empty, without Unicode spaces or "+"; tlog-checkpoint
    # recommends the same for origins, and a newline would break the line format outright.
    if not name or "+" in name or _SPACE.search(name) or _CONTROL.search(name):
        raise KeyFormatError(f"{what} {name!r} must be non-empty, without spaces or '+'")


def _b64decode(text: str, what: str) -> bytes:
    """Standard base64 in its one canonical spelling: the unused low bits of a final character
    before '=' must be zero, or one note could be written several ways (and compared or
    de-duplicated as different notes)."""
    if not _BASE64.fullmatch(text):
        raise MalformedNoteError(f"{what} is not standard base64")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise MalformedNoteError(f"{what} is not standard base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise MalformedNoteError(f"{what} is not canonical base64")
    return raw


# --- checkpoint bodies (c2sp.org/tlog-checkpoint) ------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: origin, tree size and RFC 9162 root hash (+ opaque extension lines)."""

    origin: str
    tree_size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise MalformedNoteError("the origin is a non-empty single line")
        if not 0 <= self.tree_size < 1 << 64:
            raise MalformedNoteError("the tree size is a uint64")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedNoteError("the root hash is 32 bytes")
        for line in self.extensions:
            if not line or "\n" in line or _CONTROL.search(line):
                raise MalformedNoteError("extension lines are non-empty single lines")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each ending in newline."""
        lines = [
            self.origin,
            str(self.tree_size),
            base64.b64encode(self.root_hash).decode(),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text (strictly: the form ``body()`` writes)."""
        if not text.endswith("\n"):
            raise MalformedNoteError("a checkpoint body ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNoteError("a checkpoint body has at least three lines")
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise MalformedNoteError("the tree size is decimal without leading zeros")
        root_hash = _b64decode(root, "the root hash")
        if base64.b64encode(root_hash).decode() != root:
            raise MalformedNoteError("the root hash is not in canonical base64")
        return cls(origin, int(size), root_hash, tuple(extensions))


# --- keys (c2sp.org/signed-note, Ed25519) --------------------------------------------------


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4] (signed-note)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_TYPE]) + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted Ed25519 note key: its name, key ID and public key."""

    name: str
    public_key: bytes  # 32 bytes, RFC 8032 encoding

    def __post_init__(self) -> None:
        _check_name(self.name, "key name")
        if len(self.public_key) != 32:
            raise KeyFormatError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def vkey(self) -> str:
        """``<name>+<hex key ID>+<base64(0x01 || public key)>``: the string to publish."""
        encoded = base64.b64encode(bytes([ED25519_TYPE]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        parts = vkey.strip().split("+", 2)  # the base64 key may hold "+"
        if len(parts) != 3:
            raise KeyFormatError("a verifier key is <name>+<hex key ID>+<base64 key>")
        name, hex_id, encoded = parts
        try:
            raw = base64.b64decode(encoded, validate=True)
            claimed = bytes.fromhex(hex_id)
        except (binascii.Error, ValueError) as exc:
            raise KeyFormatError("bad key ID or key encoding in verifier key") from exc
        if len(raw) != 33 or raw[0] != ED25519_TYPE:
            raise KeyFormatError("only Ed25519 verifier keys (type 0x01) are supported")
        verifier = cls(name, raw[1:])
        if claimed != verifier.key_id or len(hex_id) != 8:
            raise KeyFormatError("the verifier key's ID does not match its name and key")
        return verifier

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True)
class NoteSigner:
    """An Ed25519 note signing key under a key name."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_name(self.name, "key name")

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate())

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, _raw_public(self.private_key.public_key()))

    def skey(self) -> str:
        """``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>`` (the sumdb/note signer
        key format): the secret to keep in a 0600 file."""
        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        encoded = base64.b64encode(bytes([ED25519_TYPE]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier().key_id.hex()}+{encoded}"

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise KeyFormatError("a signer key is PRIVATE+KEY+<name>+<hex key ID>+<base64 key>")
        name, hex_id, encoded = parts[2:]
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise KeyFormatError("bad key encoding in signer key") from exc
        if len(raw) != 33 or raw[0] != ED25519_TYPE:
            raise KeyFormatError("only Ed25519 signer keys (type 0x01) are supported")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.verifier().key_id.hex() != hex_id:
            raise KeyFormatError("the signer key's ID does not match its name and key")
        return signer

    def vkey(self) -> str:
        return self.verifier().vkey()

    def signature_line(self, text: str) -> str:
        """``— <name> base64(key ID || Ed25519(text))`` with its newline (signed-note)."""
        sig = self.private_key.sign(text.encode())
        encoded = base64.b64encode(self.verifier().key_id + sig).decode()
        return f"{SIGNATURE_PREFIX}{self.name} {encoded}\n"


# --- signed notes (c2sp.org/signed-note) ---------------------------------------------------


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """The signed note: text (ending in newline), a blank line, one signature line per key."""
    _check_note_text(text)
    if not signers:
        raise ValueError("a note needs at least one signature")
    return text + "\n" + "".join(s.signature_line(text) for s in signers)


def _check_note_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedNoteError("note text ends with a newline")
    if _CONTROL.search(text):
        raise MalformedNoteError("note text has ASCII control characters other than newline")


def _split_note(note: str | bytes) -> tuple[str, str]:
    """A note's text and its signature block, the note's form checked (MalformedNoteError)."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise MalformedNoteError("note too large")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNoteError("a note is UTF-8") from exc
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise MalformedNoteError("note too large")
    if _CONTROL.search(note):
        raise MalformedNoteError("note has ASCII control characters other than newline")
    # The text ends at the LAST blank line: text "\n" "\n" signatures.
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("no blank line before the signatures")
    return note[: split + 1], note[split + 2 :]


def unverified_checkpoint(note: str | bytes) -> Checkpoint:
    """What a checkpoint note says, its signatures NOT checked: for a note this gateway stored
    and signed itself, to answer from what clients will verify rather than from a copy."""
    return Checkpoint.from_body(_split_note(note)[0])


def open_note(note: str | bytes, verifier: NoteVerifier) -> str:
    """The text of a note, once a signature by ``verifier`` is found and verifies.

    Follows signed-note "Signatures": signatures from unknown keys are ignored; a known key's
    signature that fails rejects the whole note; no verified known signature rejects it too.
    """
    text, sigs = _split_note(note)
    if not sigs.endswith("\n"):
        raise MalformedNoteError("the signature block ends with a newline")
    lines = sigs[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError("too many signatures")
    verified = False
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedNoteError("a signature line starts with an em dash and a space")
        name, sep, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not sep or not name or " " in encoded:
            raise MalformedNoteError("a signature line is '— <name> <base64>'")
        raw = _b64decode(encoded, "a signature")
        if len(raw) < 5:
            raise MalformedNoteError("a signature holds a 4-byte key ID and a signature")
        if name != verifier.name or raw[:4] != verifier.key_id:
            continue  # an unknown key (another signer, a witness): ignored, as the spec says
        if not verifier.verify(text.encode(), raw[4:]):
            raise UnverifiedNoteError(f"the signature by {name} does not verify")
        verified = True
    if not verified:
        raise UnverifiedNoteError(f"the note is not signed by {verifier.name}")
    return text


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note."""
    return sign_note(checkpoint.body(), [signer])


def parse_and_verify(note: str | bytes, verifier: NoteVerifier) -> Checkpoint:
    """Verify a checkpoint note's signature, then parse its body (never the other way round)."""
    return Checkpoint.from_body(open_note(note, verifier))
