"""Ledger use cases: sign a site's checkpoint, verify a site against a saved checkpoint, and the
log's signing key kept in a file."""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from screening.domain.checkpoint import (
    DEFAULT_ORIGIN_PREFIX,
    Checkpoint,
    CheckpointError,
    KeyFormatError,
    NoteSigner,
    NoteVerifier,
    parse_and_verify,
    sign_checkpoint,
    site_origin,
    unverified_checkpoint,
)
from screening.domain.ledger import (
    LeafNotFoundError,
    LedgerInconsistentError,
    ProofRequestError,
    VerificationReport,
    event_entry,
    leaf_hash,
    verify_consistency,
)
from screening.files import create_once
from screening.storage import ledger as ledger_store

log = logging.getLogger(__name__)

DEFAULT_KEY_NAME = "screening.example/ledger"


class SignerKeyError(Exception):
    """The ledger signing key file cannot be read, or holds another key than expected."""


class SignerMismatchError(SignerKeyError):
    """A site's checkpoints are signed with another key than this gateway's, or name its log
    otherwise: gateways on one database must share one key file and one origin prefix, or
    their notes alternate between keys (or names) that each verify only some of them."""


def signed_by(note: str, signer: LedgerSigner) -> bool:
    """Whether ``note`` carries a valid signature of ``signer``'s key."""
    try:
        parse_and_verify(note, signer.verifier())
    except CheckpointError:
        return False
    return True


def note_head(note: str) -> Checkpoint:
    """What a stored checkpoint note says (origin, size, root), its signatures not checked:
    the one a client checks, and so the one every answer must agree with. A note that cannot
    be read is LedgerInconsistentError."""
    try:
        return unverified_checkpoint(note)
    except CheckpointError as exc:
        raise LedgerInconsistentError(f"a stored checkpoint note cannot be read: {exc}") from None


def checkpoint_of(stored: ledger_store.StoredCheckpoint, signer: LedgerSigner) -> Checkpoint:
    """What ``stored``'s note signs, checked: signed with ``signer``'s key (else a
    CheckpointError), and the row's size and root the note's (else LedgerInconsistentError:
    the row was edited, and nothing may be told or extended from it)."""
    checkpoint = parse_and_verify(stored.note, signer.verifier())
    _agrees(stored, checkpoint)
    return checkpoint


def _agrees(stored: ledger_store.StoredCheckpoint, checkpoint: Checkpoint) -> None:
    if (checkpoint.tree_size, checkpoint.root_hash) != (stored.tree_size, stored.root_hash):
        raise LedgerInconsistentError(
            f"site {stored.site_id}: the stored checkpoint of size {stored.tree_size} does not"
            " say what its signed note says"
        )


@dataclass(frozen=True, slots=True)
class LedgerSigner:
    """The Ed25519 key that signs every site's checkpoints, kept in a 0600 file.

    The file holds one line in the sumdb/note signer-key format
    (``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``); publish ``vkey()``.
    """

    signer: NoteSigner

    @classmethod
    def load_or_create(cls, path: Path, name: str = DEFAULT_KEY_NAME) -> LedgerSigner:
        """Load the key at ``path``, or generate it there (mode 0600) if there is none.

        Creation is atomic (written aside, then hard-linked into place), so two gateways
        starting together end up with one key.
        """
        path = Path(path)
        if not path.exists():
            create_once(path, NoteSigner.generate(name).skey() + "\n")  # or another's won
        signer = cls.load(path)
        if signer.name != name:
            raise SignerKeyError(f"{path} holds the key of {signer.name!r}, not {name!r}")
        return signer

    @classmethod
    def load(cls, path: Path) -> LedgerSigner:
        path = Path(path)
        try:
            mode = path.stat().st_mode
            text = path.read_text("ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise SignerKeyError(f"cannot read the ledger key {path}") from exc
        # Anyone who can read the key can sign any site's history: a key every local user can
        # read is refused (as ssh refuses such a private key); a group may read it (root:screening
        # 0640, a common way to hand a service its secret), with a warning.
        if mode & stat.S_IRWXO:
            raise SignerKeyError(
                f"the ledger key {path} is open to every user (mode {stat.S_IMODE(mode):04o}):"
                f" chmod o-rwx it"
            )
        if mode & stat.S_IRWXG:
            log.warning("ledger key file is readable by its group", extra={"path": str(path)})
        try:
            return cls(NoteSigner.from_skey(text))
        except KeyFormatError as exc:
            raise SignerKeyError(f"{path} does not hold an Ed25519 note signer key") from exc

    @property
    def name(self) -> str:
        return self.signer.name

    def verifier(self) -> NoteVerifier:
        return self.signer.verifier()

    def vkey(self) -> str:
        """The verifier key to publish: ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        return self.signer.vkey()

    def sign(self, checkpoint: Checkpoint) -> str:
        return sign_checkpoint(checkpoint, self.signer)


async def make_checkpoint(
    pool: asyncpg.Pool[Any],
    site_id: str,
    signer: LedgerSigner,
    *,
    origin_prefix: str = DEFAULT_ORIGIN_PREFIX,
    adopt_key: bool = False,
) -> str:
    """Sign the site's current tree head as a checkpoint note, store it and return it.

    A site whose latest checkpoint another key signed is refused (``SignerMismatchError``)
    unless ``adopt_key``: an operator replacing a lost or retired key says so once per site
    (``screening ledger checkpoint --adopt-key``), and from then on this key extends it.

    C2SP tlog-checkpoint: a log MUST NOT sign a checkpoint inconsistent with one it signed
    before, so the new head is first proven consistent with the latest stored checkpoint
    (RFC 9162 §2.1.4) from the stored hashes; a failure raises ``LedgerInconsistentError``.
    If the tree has not grown, the latest checkpoint is returned as it is.
    """
    origin = site_origin(site_id, origin_prefix)
    async with pool.acquire() as conn, conn.transaction():
        # The checkpoint first, then the head: each statement sees what was committed when it
        # began, and the head only grows, so a checkpoint another gateway signs in between
        # can never look larger than the head read after it (a false "does not extend").
        stored = await ledger_store.latest_checkpoint(conn, site_id)
        head = await ledger_store.latest_root(conn, site_id)
        if stored is not None:
            previous = _previous(stored, signer, adopt_key=adopt_key)
            if previous.tree_size > head.tree_size:
                raise LedgerInconsistentError(
                    f"site {site_id}: the log has {head.tree_size} leaves, but a checkpoint "
                    f"of {previous.tree_size} was signed"
                )
            if (previous.tree_size, previous.root_hash) == (head.tree_size, head.root_hash):
                if not adopt_key or (previous.origin == origin and signed_by(stored.note, signer)):
                    return stored.note
                # Adopted with no leaf since: the same checkpoint signed again in place, with
                # this key and origin (a later signing would otherwise find the old ones).
                checkpoint = Checkpoint(origin, head.tree_size, head.root_hash)
                note = signer.sign(checkpoint)
                await ledger_store.replace_checkpoint_note(conn, site_id, checkpoint, note)
                return note
            proof = await ledger_store.consistency_proof(
                conn, site_id, previous.tree_size, head.tree_size
            )
            if not verify_consistency(
                previous.tree_size, head.tree_size, previous.root_hash, head.root_hash, proof
            ):
                raise LedgerInconsistentError(
                    f"site {site_id}: the log does not extend its checkpoint of size "
                    f"{previous.tree_size}"
                )
            if previous.origin != origin and not adopt_key:
                # The origin is the log's name: auditors holding its checkpoints would take a
                # new one as another log's. Renaming is an operator's decision, once per site.
                raise SignerMismatchError(
                    f"site {site_id}: its log is named {previous.origin!r}, this gateway would"
                    f" sign it as {origin!r}: set SCREENING_LEDGER_ORIGIN_PREFIX back, or"
                    " rename it once with `screening ledger checkpoint --site SITE --adopt-key`"
                )
        checkpoint = Checkpoint(origin, head.tree_size, head.root_hash)
        note = signer.sign(checkpoint)
        saved = await ledger_store.save_checkpoint(conn, site_id, checkpoint, note)
        return saved.note


def _previous(
    stored: ledger_store.StoredCheckpoint, signer: LedgerSigner, *, adopt_key: bool
) -> Checkpoint:
    """The checkpoint a new one must extend: what the stored note signs, never the row's own
    columns (which anyone who can write to the database could set to a forged history's
    root). Without ``adopt_key`` this gateway's key must have signed it."""
    if adopt_key:
        previous = note_head(stored.note)
        _agrees(stored, previous)
        return previous
    try:
        return checkpoint_of(stored, signer)
    except CheckpointError:
        raise SignerMismatchError(
            f"site {stored.site_id}: its checkpoints are signed with another key than this "
            f"gateway's ({signer.vkey()}); give every gateway the same SCREENING_LEDGER_KEY_FILE"
        ) from None


async def verify(
    pool: asyncpg.Pool[Any],
    site_id: str,
    checkpoint_note: str | bytes,
    verifier: NoteVerifier,
    *,
    origin_prefix: str = DEFAULT_ORIGIN_PREFIX,
) -> VerificationReport:
    """Check the site's stored records against a saved checkpoint note.

    The note's signature is verified first (``UnverifiedNoteError`` / ``MalformedNoteError``
    otherwise); then the records are read in one read-only REPEATABLE READ snapshot.
    """
    checkpoint = parse_and_verify(checkpoint_note, verifier)
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        return await ledger_store.verify_site(
            conn, site_id, checkpoint, expected_origin=site_origin(site_id, origin_prefix)
        )


async def checkpoint_all(
    pool: asyncpg.Pool[Any], signer: LedgerSigner, *, origin_prefix: str = DEFAULT_ORIGIN_PREFIX
) -> dict[str, str]:
    """Checkpoint every site whose log grew since its last checkpoint (the periodic job).

    Returns the new notes by site. A site whose log fails its consistency check is logged and
    skipped so that the others are still signed; its error is raised after the loop.
    """
    async with pool.acquire() as conn:
        sites = await ledger_store.sites_to_checkpoint(conn)
    notes: dict[str, str] = {}
    failed: list[LedgerInconsistentError] = []
    for site_id in sites:
        try:
            notes[site_id] = await make_checkpoint(
                pool, site_id, signer, origin_prefix=origin_prefix
            )
        except LedgerInconsistentError as exc:
            log.exception(
                "ledger of a site no longer extends its checkpoint", extra={"site": site_id}
            )
            failed.append(exc)
        except SignerMismatchError as exc:
            log.critical("not signing: %s", exc, extra={"site": site_id})
        except (asyncpg.PostgresError, OSError):
            raise  # the database or disk, not the site: the next round retries them all
        except Exception:  # one site's unforeseen failure must not stop the others' signing
            log.exception("checkpointing a site failed", extra={"site": site_id})
    if failed:
        raise failed[0]
    return notes


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """That an event's leaf is in the site's tree of ``tree_size`` (RFC 9162 §2.1.3).

    ``checkpoint`` is the signed note of that size when one exists: a client checks the note's
    signature, then the proof against the note's root. ``entry`` is the leaf's
    ``canonical_entry``: its hash is ``leaf_hash``, and it names the event (site, event id,
    type, time, waybill digest), so a client knows the proof is of this event, not of any leaf.
    """

    site_id: str
    event_id: UUID
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]
    checkpoint: str | None
    entry: bytes


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """That the site's tree of ``new_size`` extends the one of ``old_size`` (RFC 9162 §2.1.4)."""

    site_id: str
    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]


async def latest_checkpoint(pool: asyncpg.Pool[Any], site_id: str) -> str | None:
    """The site's latest signed checkpoint note, if any."""
    async with pool.acquire() as conn:
        stored = await ledger_store.latest_checkpoint(conn, site_id)
    return None if stored is None else stored.note


async def prove_inclusion(
    pool: asyncpg.Pool[Any], site_id: str, event_id: UUID, tree_size: int | None = None
) -> InclusionProof:
    """Inclusion proof of an event; by default in the latest checkpoint that covers it.

    Without a covering checkpoint (the event came after the latest one) the current tree size
    is used and ``checkpoint`` is None. ``LeafNotFoundError`` if the event was never logged.
    """
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        leaf = await ledger_store.find_leaf(conn, site_id, event_id)
        if leaf is None:
            raise LeafNotFoundError(f"event {event_id} is not in the log of site {site_id}")
        note: str | None = None
        if tree_size is None:
            latest = await ledger_store.latest_checkpoint(conn, site_id)
            signed = -1 if latest is None else note_head(latest.note).tree_size
            if latest is not None and signed > leaf.leaf_index:
                tree_size, note = signed, latest.note  # the size the note signs
            else:
                tree_size = (await ledger_store.latest_root(conn, site_id)).tree_size
        else:
            at = await ledger_store.checkpoint_at(conn, site_id, tree_size)
            note = None if at is None else at.note
        if leaf.leaf_index >= tree_size:
            raise ProofRequestError(f"event {event_id} was logged after size {tree_size}")
        hashes = await ledger_store.inclusion_proof(conn, site_id, leaf.leaf_index, tree_size)
        [stored] = await ledger_store.load_ledger_events(conn, site_id, [event_id])
    entry = event_entry(stored)
    if leaf_hash(entry) != leaf.leaf_hash:  # the leaf row names another event than it hashes
        raise LedgerInconsistentError(
            f"site {site_id}: leaf {leaf.leaf_index} is not the entry of event {event_id}"
        )
    return InclusionProof(
        site_id, event_id, leaf.leaf_index, tree_size, leaf.leaf_hash, tuple(hashes), note, entry
    )


async def prove_consistency(
    pool: asyncpg.Pool[Any], site_id: str, old_size: int, new_size: int | None = None
) -> ConsistencyProof:
    """Consistency proof between two sizes; ``new_size`` defaults to the latest checkpoint's."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        if new_size is None:
            latest = await ledger_store.latest_checkpoint(conn, site_id)
            if latest is None:
                raise ProofRequestError(f"site {site_id} has no checkpoint yet")
            new_size = note_head(latest.note).tree_size  # the size the note signs
        hashes = await ledger_store.consistency_proof(conn, site_id, old_size, new_size)
    return ConsistencyProof(site_id, old_size, new_size, tuple(hashes))
