"""Ledger endpoints: a site's latest signed checkpoint, inclusion and consistency proofs, and the
log's public verifier key."""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Any

from aiohttp import web

from screening.api.auth import principal_of
from screening.api.context import GATEWAY
from screening.api.endpoints import Param, Route
from screening.domain.access import Permission, Principal
from screening.domain.checkpoint import CheckpointError, MalformedNoteError
from screening.domain.ledger import (
    LeafNotFoundError,
    LedgerEntryError,
    LedgerInconsistentError,
    ProofRequestError,
)
from screening.errors import (
    BadRequestError,
    ForbiddenError,
    NotFoundError,
    ServiceUnavailableError,
)
from screening.services import ledger as ledger_service
from screening.services.ledger import LedgerSigner
from screening.storage import ledger as ledger_store

log = logging.getLogger(__name__)

LEDGER_SIGNER: web.AppKey[LedgerSigner] = web.AppKey("ledger_signer", LedgerSigner)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _site(request: web.Request, principal: Principal) -> str:
    site_id = request.match_info["site_id"]
    if not principal.covers(site_id):
        raise ForbiddenError("this key does not cover that site", code="forbidden_site")
    return site_id


def _int(request: web.Request, name: str, *, required: bool) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        if required:
            raise BadRequestError(f"{name} is required", code="invalid_query")
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequestError(f"{name} must be an integer", code="invalid_query") from exc
    if not 0 <= value < 2**63:  # tree sizes and indexes are PostgreSQL bigints
        raise BadRequestError(f"{name} must be between 0 and 2^63 - 1", code="invalid_query")
    return value


def _inconsistent(exc: LedgerInconsistentError) -> ServiceUnavailableError:
    """The answer to a site whose stored log or checkpoints disagree (an alarm for its
    operators: they were edited outside the gateway)."""
    log.critical("%s", exc)
    return ServiceUnavailableError(
        "the site's stored log or checkpoint does not match what was signed",
        code="ledger_inconsistent",
        retry_after_s=60,
    )


async def get_checkpoint(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    site_id = _site(request, await principal_of(request, Permission.READ_RATES))
    async with gw.pool.acquire() as conn:
        stored = await ledger_store.latest_checkpoint(conn, site_id)
    if stored is None:
        raise NotFoundError("no checkpoint for this site yet", code="no_checkpoint")
    signer = request.app[LEDGER_SIGNER]
    try:  # every field of the answer is what the note signs
        checkpoint = ledger_service.checkpoint_of(stored, signer)
    except MalformedNoteError as exc:  # not a note at all: edited outside the gateway
        raise _inconsistent(LedgerInconsistentError(f"site {site_id}: {exc}")) from None
    except CheckpointError:
        # Never hand out a note with a vkey that does not verify it.
        raise ServiceUnavailableError(
            "this gateway's ledger key is not the one the site's checkpoints are signed with; "
            "every gateway must share one key file",
            code="ledger_key_mismatch",
            retry_after_s=60,
        ) from None
    except LedgerInconsistentError as exc:
        raise _inconsistent(exc) from None
    body: dict[str, Any] = {
        "site_id": site_id,
        "origin": checkpoint.origin,
        "tree_size": checkpoint.tree_size,
        "root_hash": _b64(checkpoint.root_hash),
        "note": stored.note,
        "created_at": stored.created_at.isoformat(),
        "vkey": signer.vkey(),
    }
    return web.json_response(body)


async def get_inclusion(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    site_id = _site(request, await principal_of(request, Permission.READ_RATES))
    try:
        event_id = uuid.UUID(request.query.get("event_id", ""))
    except ValueError as exc:
        raise BadRequestError("event_id must be a UUID", code="invalid_query") from exc
    try:
        proof = await ledger_service.prove_inclusion(
            gw.pool, site_id, event_id, _int(request, "tree_size", required=False)
        )
    except LeafNotFoundError as exc:
        raise NotFoundError(str(exc), code="not_in_ledger") from exc
    except ProofRequestError as exc:
        raise BadRequestError(str(exc), code="invalid_proof_request") from exc
    except LedgerEntryError as exc:  # logged, but its record removed since (retention)
        raise NotFoundError(str(exc), code="event_not_stored") from exc
    except LedgerInconsistentError as exc:
        raise _inconsistent(exc) from None
    return web.json_response(
        {
            "site_id": site_id,
            "event_id": str(event_id),
            "leaf_index": proof.leaf_index,
            "tree_size": proof.tree_size,
            # The entry the leaf hashes (RFC 9162 leaf input): it names the event, so the
            # proof is of this event and not of whichever leaf the server chose.
            "entry": _b64(proof.entry),
            "leaf_hash": _b64(proof.leaf_hash),
            "hashes": [_b64(h) for h in proof.hashes],
            "checkpoint": proof.checkpoint,
        }
    )


async def get_consistency(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    site_id = _site(request, await principal_of(request, Permission.READ_RATES))
    old = _int(request, "old_size", required=True)
    assert old is not None
    try:
        proof = await ledger_service.prove_consistency(
            gw.pool, site_id, old, _int(request, "new_size", required=False)
        )
    except ProofRequestError as exc:
        raise BadRequestError(str(exc), code="invalid_proof_request") from exc
    except LedgerInconsistentError as exc:
        raise _inconsistent(exc) from None
    return web.json_response(
        {
            "site_id": site_id,
            "old_size": proof.old_size,
            "new_size": proof.new_size,
            "hashes": [_b64(h) for h in proof.hashes],
        }
    )


async def get_vkey(request: web.Request) -> web.Response:
    return web.Response(text=request.app[LEDGER_SIGNER].vkey() + "\n")


_SITE = Param("site_id", "path", "Site id", required=True)
_READERS = ("station", "supervisor", "police", "admin")

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/v1/sites/{site_id}/ledger/checkpoint",
        get_checkpoint,
        "The site's latest signed checkpoint (C2SP tlog-checkpoint in an Ed25519 signed note)",
        roles=_READERS,
        params=(_SITE,),
        raw_response="application/json",
    ),
    Route(
        "GET",
        "/v1/sites/{site_id}/ledger/inclusion",
        get_inclusion,
        "RFC 9162 inclusion proof of an event's leaf (default: in the latest covering checkpoint)",
        roles=_READERS,
        params=(
            _SITE,
            Param("event_id", "query", "Event id", {"type": "string", "format": "uuid"}, True),
            Param("tree_size", "query", "Tree size to prove against", {"type": "integer"}),
        ),
        raw_response="application/json",
    ),
    Route(
        "GET",
        "/v1/sites/{site_id}/ledger/consistency",
        get_consistency,
        "RFC 9162 consistency proof between two tree sizes of the site's log",
        roles=_READERS,
        params=(
            _SITE,
            Param("old_size", "query", "Older tree size", {"type": "integer"}, True),
            Param(
                "new_size",
                "query",
                "Newer tree size (default: the latest checkpoint's)",
                {"type": "integer"},
            ),
        ),
        raw_response="application/json",
    ),
    Route(
        "GET",
        "/v1/ledger/vkey",
        get_vkey,
        "The verifier key of the ledger's signing key (signed-note vkey format)",
        raw_response="text/plain",
    ),
)
