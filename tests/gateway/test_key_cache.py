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
        self.id_reads = 0

    async def _load(self, digest: bytes) -> Principal | None:
        self.reads += 1
        return await super()._load(digest)

    async def _reload(self) -> dict[str, bytes]:
        self.id_reads += 1
        return await super()._reload()


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


async def test_made_up_keys_cost_no_lookup_each_and_push_no_real_key_out(
    pool: asyncpg.Pool[Any],
) -> None:
    """A flood of well-formed keys that name no key, or name a real key's id (ids are not
    secret) with a made-up secret: refused without a read of their own (the active keys'
    hashes are read again at most a few times a second), and the real keys stay cached."""
    _, key_id, key = await _station_key(pool)
    auth = CountingAuthenticator(pool, cache_s=60.0)
    await auth.authenticate(key)
    reads = auth.reads
    made_up = [access.new_key(Role.STATION)[1] for _ in range(300)]
    made_up += [f"scr_station_{key_id}_{k.split('_', 3)[3]}" for k in made_up[:100]]
    started = asyncio.get_running_loop().time()
    for wave in range(0, len(made_up), 100):  # requests in flight together share a read
        refused = await asyncio.gather(
            *(auth.authenticate(k) for k in made_up[wave : wave + 100]), return_exceptions=True
        )
        assert all(isinstance(r, AuthenticationError) for r in refused)
    elapsed = asyncio.get_running_loop().time() - started
    assert auth.reads == reads  # no per-key lookup
    assert auth.id_reads <= 2 + auth.RELOAD_BURST + elapsed * auth.RELOADS_PER_S
    await auth.authenticate(key)
    assert auth.reads == reads  # still cached
    # A key made after the hashes were read is found: its miss reads them again.
    _, _, newer = await _station_key(pool)
    assert (await auth.authenticate(newer)).role is Role.STATION


async def test_a_full_cache_drops_its_expired_then_its_oldest_entries_not_everything(
    pool: asyncpg.Pool[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(KeyAuthenticator, "MAX_CACHED", 10)
    keys = [(await _station_key(pool))[2] for _ in range(12)]
    auth = CountingAuthenticator(pool, cache_s=60.0)
    for key in keys:
        await auth.authenticate(key)
    assert auth.reads == 12
    await auth.authenticate(keys[-1])  # the newest are still cached
    assert auth.reads == 12
    await auth.authenticate(keys[0])  # the oldest went to make room
    assert auth.reads == 13
