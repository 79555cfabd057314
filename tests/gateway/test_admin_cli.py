"""The admin commands as an operator runs them: `screening migrate`, `sites add`, `keys create`,
`keys list` and `keys revoke`, each a process of its own against the test database."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.conftest import make_database
from tests.gateway.serving import free_port, listening, screening, serve_env, start_serve


async def test_sites_and_keys_from_the_command_line(
    database_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    env = serve_env(database_url, tmp_path, 0)
    a, b = (f"CLI-{uuid.uuid4().hex[:6]}" for _ in range(2))
    assert (await screening(env, "migrate"))[0] == 0
    for site in (a, b):
        rc, out = await screening(env, "sites", "add", site, "--name", "网点", "--xray-flows=air")
        assert (rc, out.strip().splitlines()[-1]) == (0, f"site {site} saved")
    rc, out = await screening(env, "sites", "list")
    assert rc == 0
    assert f"{a}\t网点\tAsia/Shanghai\txray:air" in out
    # An empty list is a policy of its own: no flow X-rayed (not "every flow").
    rc, out = await screening(env, "sites", "add", b, "--name", "网点", "--xray-flows=")
    assert rc == 0, out
    rc, out = await screening(env, "sites", "list")
    assert f"{b}\t网点\tAsia/Shanghai\txray:\n" in out
    # Renaming names no policy: the site keeps its own.
    rc, out = await screening(env, "sites", "add", b, "--name", "新网点")
    assert rc == 0, out
    rc, out = await screening(env, "sites", "list")
    assert f"{b}\t新网点\tAsia/Shanghai\txray:\n" in out
    # After an upgrade whose compliance rules changed: the sites' stored parcels again.
    rc, out = await screening(env, "sites", "rederive", a, b)
    assert (rc, out.strip().splitlines()) == (
        0,
        [f"{a}: 0 parcels derived again", f"{b}: 0 parcels derived again"],
    )
    rc, out = await screening(env, "sites", "rederive", "NO-SUCH-SITE")
    assert rc == 2
    assert "unknown_site" in out
    assert "Traceback" not in out

    # Both spellings of several sites: --site A B, and --site A --site B.
    rc, out = await screening(env, "keys", "create", "--role", "supervisor", "--site", a, b)
    assert rc == 0, out
    key_id = re.search(r"key id: (\S+)", out)
    assert key_id is not None
    rc, out = await screening(env, "keys", "create", "--role", "police", "--site", a, "--site", b)
    assert rc == 0, out
    other = re.search(r"key id: (\S+)", out)
    assert other is not None
    for created in (key_id[1], other[1]):
        scope = await pool.fetchval("SELECT site_ids FROM api_keys WHERE key_id = $1", created)
        assert sorted(scope) == sorted([a, b])
    # A station key is for exactly one site: refused in one line.
    rc, out = await screening(env, "keys", "create", "--role", "station", "--site", a, b)
    assert rc == 2
    assert "invalid_scope" in out
    assert "Traceback" not in out

    rc, out = await screening(env, "keys", "list")
    assert rc == 0
    assert any(
        line.startswith(f"{key_id[1]}\tsupervisor\t") and "active" in line
        for line in out.splitlines()
    )

    rc, out = await screening(env, "keys", "revoke", key_id[1])
    assert (rc, out.strip()) == (0, f"key {key_id[1]} revoked")
    rc, out = await screening(env, "keys", "list")
    assert f"{key_id[1]}\tsupervisor" in out
    assert "revoked" in next(line for line in out.splitlines() if line.startswith(key_id[1]))
    rc, out = await screening(env, "keys", "revoke", key_id[1])
    assert rc != 0  # not twice
    # An unknown role or an invalid site id is refused with a one-line error, not a traceback.
    rc, out = await screening(env, "keys", "create", "--role", "janitor", "--site", a)
    assert rc == 2
    assert "Traceback" not in out
    rc, out = await screening(env, "sites", "add", "bad site!", "--name", "x")
    assert rc != 0
    assert "Traceback" not in out


async def test_a_revoked_key_from_the_command_line_no_longer_authenticates(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = serve_env(database_url, tmp_path, port)
    site = f"CLI-{uuid.uuid4().hex[:6]}"
    assert (await screening(env, "sites", "add", site, "--name", "n"))[0] == 0
    _, out = await screening(env, "keys", "create", "--role", "supervisor", "--site", site)
    found = re.search(r"key id: (\S+)\nkey \(shown once, store it now\): (\S+)", out)
    assert found is not None
    key_id, key = found[1], found[2]
    proc = await start_serve({**env, "SCREENING_API_KEY_CACHE_S": "0"})
    try:
        await listening(proc)
        url = f"http://127.0.0.1:{port}/v1/sites/{site}/rates?from=2026-11-01&to=2026-11-02"
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200
            assert (await screening(env, "keys", "revoke", key_id))[0] == 0
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 401
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=30)


async def test_admin_commands_do_not_migrate_a_configured_database(
    server_dsn: str, tmp_path: Path
) -> None:
    """Upgrades stop every gateway of the older version before the new one migrates: an admin
    command run with the new version installed must not migrate the schema under them. It
    says what to run instead, and leaves the database as it was."""
    dsn = await make_database(server_dsn)
    env = serve_env(dsn, tmp_path, 0)
    for command in (("keys", "list"), ("sites", "list"), ("pii", "status")):
        rc, out = await screening(env, *command)
        assert rc == 2, out
        assert "run `screening migrate`" in out, out
        assert "Traceback" not in out
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()
    assert (await screening(env, "migrate"))[0] == 0
    rc, out = await screening(env, "keys", "list")
    assert rc == 0, out
