"""API keys and sites: create, list, revoke, and authenticate a bearer key."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import re
import secrets
import time
import zoneinfo
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from screening.background import SingleFlight
from screening.domain.access import Principal, Role
from screening.domain.events import Flow
from screening.domain.identity import DocumentType, IdentityDocumentError, validate_document
from screening.domain.records import ContractAgreement, ContractCustomer
from screening.errors import AuthenticationError, BadRequestError, NotFoundError
from screening.services.ingest import reevaluate_site, settle_after
from screening.storage import contracts as contract_store
from screening.storage import keys as key_store
from screening.storage import sites as site_store
from screening.storage.keys import StoredKey
from screening.storage.sites import Site

log = logging.getLogger(__name__)

# scr_<role>_<key id>_<secret>: the typed prefix lets secret scanners and people recognise a key
# and its role at a glance; only SHA-256(key) is stored (keys are 256-bit random, so a fast hash
# is enough: there is nothing to brute-force).
_KEY_FORMAT = re.compile(
    r"^scr_(station|reviewer|supervisor|police|admin)_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$"
)
_SITE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key(role: Role) -> tuple[str, str]:
    """A fresh key and its id: (key_id, full key)."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return key_id, f"scr_{role.value}_{key_id}_{secret}"


async def create_key(
    pool: asyncpg.Pool[Any], role: Role, site_ids: Sequence[str], label: str = ""
) -> tuple[str, str]:
    """Create a key; returns (key_id, key). The key is not stored and cannot be shown again."""
    sites = sorted(set(site_ids))
    if role is Role.STATION and len(sites) != 1:
        raise BadRequestError("a station key belongs to exactly one site", code="invalid_scope")
    if role is not Role.ADMIN and not sites:
        raise BadRequestError(f"a {role.value} key needs at least one site", code="invalid_scope")
    async with pool.acquire() as conn:
        known = await site_store.get_sites(conn, sites)
        missing = [s for s in sites if s not in known]
        if missing:
            raise NotFoundError(f"unknown site(s): {', '.join(missing)}", code="unknown_site")
        key_id, key = new_key(role)
        await key_store.insert_key(conn, key_id, hash_key(key), role.value, sites, label)
    return key_id, key


async def list_keys(pool: asyncpg.Pool[Any]) -> list[StoredKey]:
    async with pool.acquire() as conn:
        return await key_store.list_keys(conn)


async def revoke_key(pool: asyncpg.Pool[Any], key_id: str) -> None:
    async with pool.acquire() as conn:
        if not await key_store.revoke_key(conn, key_id):
            raise NotFoundError(f"no active key {key_id!r}", code="unknown_key")


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


async def add_site(
    pool: asyncpg.Pool[Any],
    site_id: str,
    name: str,
    *,
    timezone: str | None = None,
    xray_flows: Sequence[str] | None = None,
) -> int | None:
    """Add a site or update its name and policy. A time zone or flow list given as None keeps
    the site's (a new site: Asia/Shanghai, every flow), so renaming a site cannot change its
    policy by omission. When the policy of an existing site changes, its stored parcels are
    derived again under the new one: the number of them (None when nothing had to be)."""
    if not _SITE_ID.fullmatch(site_id):  # (match: '$' also matches before a final newline)
        raise BadRequestError(f"invalid site id {site_id!r}", code="invalid_site_id")
    # An IANA zone that both this gateway and PostgreSQL know: not the host's own (localtime),
    # not a file only the host's zone directory holds (posix/..., right/...).
    if timezone is not None and timezone not in _zones():
        raise BadRequestError(f"unknown time zone {timezone!r}", code="invalid_timezone")
    try:
        flows = None if xray_flows is None else frozenset(Flow(f) for f in xray_flows)
    except ValueError as exc:
        raise BadRequestError(str(exc), code="invalid_flow") from exc
    async with pool.acquire() as conn:
        if timezone is not None and not await site_store.timezone_known(conn, timezone):
            raise BadRequestError(
                f"the database does not know the time zone {timezone!r}", code="invalid_timezone"
            )
        site, pending = await site_store.upsert_site(conn, site_id, name, timezone, flows)
        changed_at = await site_store.database_clock(conn)  # the change is committed by now
    if not pending:
        return None
    # One policy per site, applied to all its parcels (as the parcel endpoint applies it): a
    # change re-derives what is stored under the old one. Marked pending until done, so an
    # interrupted run is finished by the next `sites add` or `sites rederive` of the site.
    [done] = await _rederive(pool, [site], changed_at)
    return done


async def _rederive(pool: asyncpg.Pool[Any], sites: Sequence[Site], since: datetime) -> list[int]:
    """Derive every stored parcel of ``sites`` again, once the transactions begun before
    ``since`` (which may have derived under an older policy) have ended, and clear each site's
    pending mark when they did and its policy is still the one given. Parcels derived, per
    site. The wait is one for all (at most settle_after's 30 s)."""
    settled = await settle_after(pool, since)
    if not settled:
        log.warning(
            "transactions begun before %s are still open; the parcels are derived now and any"
            " site marked for it stays so: run `screening sites rederive` again once idle",
            since.isoformat(),
        )
    done = []
    for site in sites:
        done.append(await reevaluate_site(pool, site.site_id))
        if settled:
            async with pool.acquire() as conn:
                await site_store.clear_rederive(conn, site.site_id, site.policy)
    return done


async def add_contract(
    pool: asyncpg.Pool[Any],
    site_id: str,
    customer_ref: str,
    *,
    name: str,
    uscc: str,
    agreement_no: str,
    valid_from: date,
    valid_until: date | None = None,
) -> str:
    """Record (or update) a contract customer's security agreement; returns the checked USCC."""
    try:
        code = validate_document(DocumentType.uscc, uscc)
    except IdentityDocumentError as exc:
        raise BadRequestError(exc.message, code=exc.code) from None
    if not customer_ref.strip() or len(customer_ref) > 64 or not agreement_no.strip():
        raise BadRequestError("a customer ref (1-64 characters) and an agreement number")
    if valid_until is not None and valid_until < valid_from:
        raise BadRequestError("the agreement ends before it begins", code="invalid_period")
    async with pool.acquire() as conn:
        if not await site_store.get_sites(conn, [site_id]):
            raise NotFoundError(f"no site {site_id!r}", code="unknown_site")
        await contract_store.upsert_contract(conn, ContractCustomer(
            site_id, customer_ref, name, code,
            ContractAgreement(agreement_no, valid_from, valid_until)))
    return code


async def list_contracts(pool: asyncpg.Pool[Any], site_id: str) -> list[dict[str, object]]:
    async with pool.acquire() as conn:
        return await contract_store.list_contracts(conn, site_id)


async def rederive_sites(pool: asyncpg.Pool[Any], site_ids: Sequence[str]) -> dict[str, int]:
    """Derive every stored parcel of the given sites (all when none are named) again from its
    logged events, under the compliance rules of this version and each site's policy: after
    an upgrade that changed the rules, so stored statuses, violations and rates agree with
    what the parcel endpoint derives. Ingest goes on meanwhile. Parcels per site."""
    known = {s.site_id: s for s in await list_sites(pool)}
    if unknown := sorted(set(site_ids) - set(known)):
        raise NotFoundError(f"unknown site {unknown[0]!r}", code="unknown_site")
    async with pool.acquire() as conn:
        now = await site_store.database_clock(conn)
    # A site still marked from an interrupted policy change is finished and cleared here too.
    chosen = [known[site] for site in (site_ids or sorted(known))]
    done = await _rederive(pool, chosen, now)
    return {site.site_id: count for site, count in zip(chosen, done, strict=True)}


async def list_sites(pool: asyncpg.Pool[Any]) -> list[Site]:
    async with pool.acquire() as conn:
        return await site_store.list_sites(conn)


async def site_exists(pool: asyncpg.Pool[Any], site_id: str) -> bool:
    async with pool.acquire() as conn:
        return site_id in await site_store.get_sites(conn, [site_id])


class KeyAuthenticator:
    """Resolves bearer keys to principals, caching lookups briefly (revocation lag <= cache_s).

    Requests that miss the cache for the same key at the same time share one database lookup:
    when a busy station's entry expires, its hundreds of in-flight requests would otherwise each
    take a pool connection for the same row.

    A key is first matched against the active keys' hashes held in memory, by its id (its
    second part, not secret): one that names no active key, or whose secret does not match,
    is refused without a lookup of its own. The hashes are read again when an id is missing
    (a key made since), at most ``RELOADS_PER_S`` times a second whatever comes in: a flood of
    made-up keys would otherwise cost a database lookup each, take the pool from real
    requests, and push the real keys out of the cache.
    """

    MAX_CACHED = 10_000
    RELOADS_PER_S = 5.0
    RELOAD_BURST = 10.0

    def __init__(self, pool: asyncpg.Pool[Any], cache_s: float = 5.0) -> None:
        self._pool = pool
        self._cache_s = cache_s
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        self._lookups: SingleFlight[bytes, Principal | None] = SingleFlight("api-key-lookup")
        self._hashes: dict[str, bytes] = {}
        self._read_from = float("-inf")  # when the read that gave ``_hashes`` began
        self._reloads: SingleFlight[None, dict[str, bytes]] = SingleFlight("api-key-hashes")
        self._tokens = self.RELOAD_BURST
        self._tokens_at = time.monotonic()

    async def _load(self, digest: bytes) -> Principal | None:
        async with self._pool.acquire() as conn:
            stored = await key_store.find_by_hash(conn, digest)
        if stored is None or stored.revoked_at is not None:
            return None
        role = Role(stored.role)
        return Principal(
            key_id=stored.key_id,
            role=role,
            sites=None
            if role is Role.ADMIN and not stored.site_ids
            else frozenset(stored.site_ids),
        )

    async def _load_and_cache(self, digest: bytes) -> Principal | None:
        started = time.monotonic()
        principal = await self._load(digest)
        self._cache.pop(digest, None)  # re-entered last: the order is of the latest lookups
        if len(self._cache) >= self.MAX_CACHED:
            self._evict(started)
        self._cache[digest] = (started, principal)
        return principal

    def _evict(self, now: float) -> None:
        """Expired entries go first; then, if still nine tenths full, the oldest tenth."""
        live = {k: v for k, v in self._cache.items() if now - v[0] < self._cache_s}
        if len(live) >= self.MAX_CACHED * 9 // 10:
            live = dict(list(live.items())[self.MAX_CACHED // 10 :])
        self._cache = live

    async def _hash_of_new(self, key_id: str) -> bytes | None:
        """The hash of a key id not among the active ones read last: read again."""
        asked = time.monotonic()
        hashes = await self._reloads.run(None, self._reload)
        if key_id not in hashes and self._read_from < asked:
            # That read began before this request came: the key may have been made since.
            hashes = await self._reloads.run(None, self._reload)
        return hashes.get(key_id)

    async def _reload(self) -> dict[str, bytes]:
        now = time.monotonic()
        self._tokens = min(
            self.RELOAD_BURST, self._tokens + (now - self._tokens_at) * self.RELOADS_PER_S
        )
        self._tokens_at = now
        self._tokens -= 1
        if self._tokens < 0:  # over the rate: wait for the token (misses meanwhile share it)
            await asyncio.sleep(-self._tokens / self.RELOADS_PER_S)
        started = time.monotonic()
        async with self._pool.acquire() as conn:
            hashes = await key_store.active_key_hashes(conn)
        self._hashes, self._read_from = hashes, started
        return hashes

    async def authenticate(self, key: str) -> Principal:
        match = _KEY_FORMAT.match(key)
        if match is None:
            raise AuthenticationError("malformed API key", code="invalid_api_key")
        digest = hash_key(key)
        known = self._hashes.get(match.group(2)) or await self._hash_of_new(match.group(2))
        if known is None or not hmac.compare_digest(known, digest):
            raise AuthenticationError("unknown or revoked API key", code="invalid_api_key")
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[0] < self._cache_s:
            principal = cached[1]
        else:
            principal = await self._lookups.run(digest, lambda: self._load_and_cache(digest))
        if principal is None or not hmac.compare_digest(match.group(1), principal.role.value):
            raise AuthenticationError("unknown or revoked API key", code="invalid_api_key")
        return principal
