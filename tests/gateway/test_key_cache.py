"""API key lookups: cached briefly, and one database read for requests that miss together."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from screening.domain.access import Principal, Role
from screening.errors import AuthenticationError
from screening.services import access
from screening.services.access import KeyAuthenticator


class CountingAuthenticator(KeyAuthenticator):
    """The real authenticator on the real database, counting its reads of the key table."""

    def __init__(self, pool: asyncpg.Pool[Any], cache_s: float) -> None:
        super().__init__(pool, cache_s)
        self.reads = 0

    async def _load(self, digest: bytes) -> Principal | None:
        self.reads += 1
        return await super()._load(digest)


async def _station_key(pool: asyncpg.Pool[Any]) -> tuple[str, str, str]:
    site = f"K-{uuid.uuid4().hex[:8]}"
    await access.add_site(pool, site, "key cache site")
    key_id, key = await access.create_key(pool, Role.STATION, [site])
    return site, key_id, key


async def test_requests_that_miss_together_share_one_read(pool: asyncpg.Pool[Any]) -> None:
    site, _, key = await _station_key(pool)
    auth = CountingAuthenticator(pool, cache_s=0.0)  # every call misses the cache
    principals = await asyncio.gather(*(auth.authenticate(key) for _ in range(50)))
    assert auth.reads == 1
    assert {p.sites for p in principals} == {frozenset({site})}
    await auth.authenticate(key)  # the shared read is over: the next miss reads again
    assert auth.reads == 2


async def test_a_cached_key_is_not_read_again_and_a_revoked_one_is_refused(
    pool: asyncpg.Pool[Any],
) -> None:
    _, key_id, key = await _station_key(pool)
    cached = CountingAuthenticator(pool, cache_s=60.0)
    await cached.authenticate(key)
    await cached.authenticate(key)
    assert cached.reads == 1
    await access.revoke_key(pool, key_id)
    fresh = CountingAuthenticator(pool, cache_s=0.0)
    with pytest.raises(AuthenticationError):
        await fresh.authenticate(key)


async def test_a_request_that_gives_up_does_not_cancel_the_shared_read(
    pool: asyncpg.Pool[Any],
) -> None:
    _, _, key = await _station_key(pool)
    auth = CountingAuthenticator(pool, cache_s=0.0)
    first = asyncio.create_task(auth.authenticate(key))
    second = asyncio.create_task(auth.authenticate(key))
    await asyncio.sleep(0)  # both are waiting on the one read
    first.cancel()
    principal = await second
    assert principal.role is Role.STATION
    assert auth.reads == 1
