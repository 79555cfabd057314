"""`screening verify`: a site's records checked against a saved signed checkpoint; changing a
row directly in PostgreSQL is reported, naming the record."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from screening.services.ledger import LedgerSigner
from tests.conftest import RunningGateway
from tests.gateway.events import parcel_flow


async def cli(database_url: str, data_dir: Path, *args: str) -> tuple[int, str]:
    env = {
        **os.environ,
        "SCREENING_DATABASE_URL": database_url,
        "SCREENING_DATA_DIR": str(data_dir),
        "SCREENING_LOG_JSON": "false",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "screening.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_verify_names_altered_and_removed_records(
    gateway: RunningGateway, database_url: str, tmp_path: Path
) -> None:
    site = gateway.keys.site
    events = parcel_flow(site, "VF0000000001") + parcel_flow(site, "VF0000000002")
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=events, headers=gateway.auth()
    ) as resp:
        assert (await resp.json())["accepted"] == len(events)
    note = tmp_path / "checkpoint.txt"
    rc, out = await cli(
        database_url, tmp_path, "ledger", "checkpoint", "--site", site, "--out", str(note)
    )
    assert rc == 0, out
    assert note.read_text().startswith(f"screening.example/sites/{site}\n12\n")

    rc, out = await cli(database_url, tmp_path, "verify", "--site", site, "--checkpoint", str(note))
    assert rc == 0, out
    assert "OK: the records match the checkpoint" in out

    inspection = next(e for e in events if e["type"] == "inspection.completed")
    dispatch = next(e for e in events if e["type"] == "parcel.dispatched")
    async with gateway.pool.acquire() as conn:
        # Someone "fixes" an inspection result and deletes a dispatch record.
        await conn.execute(
            "UPDATE events SET payload = jsonb_set(payload, '{result}', '\"refused\"') "
            "WHERE site_id = $1 AND event_id = $2",
            site,
            __import__("uuid").UUID(inspection["event_id"]),
        )
        await conn.execute(
            "DELETE FROM events WHERE site_id = $1 AND event_id = $2",
            site,
            __import__("uuid").UUID(dispatch["event_id"]),
        )
    rc, out = await cli(database_url, tmp_path, "verify", "--site", site, "--checkpoint", str(note))
    assert rc == 1, out
    altered = [line for line in out.splitlines() if line.startswith("ALTERED")]
    removed = [line for line in out.splitlines() if line.startswith("REMOVED")]
    assert len(altered) == 1
    assert inspection["event_id"] in altered[0]
    assert len(removed) == 1
    assert dispatch["event_id"] in removed[0]
    assert "FAILED" in out


async def test_a_forged_checkpoint_is_rejected(
    gateway: RunningGateway, database_url: str, tmp_path: Path
) -> None:
    site = gateway.keys.site
    async with gateway.http.post(
        f"{gateway.url}/v1/events", json=parcel_flow(site, "VF0000000003"), headers=gateway.auth()
    ) as resp:
        assert resp.status == 200
    note = tmp_path / "checkpoint.txt"
    rc, out = await cli(
        database_url, tmp_path, "ledger", "checkpoint", "--site", site, "--out", str(note)
    )
    assert rc == 0, out
    forged = note.read_text().replace("\n6\n", "\n5\n", 1)  # claim a smaller tree
    note.write_text(forged)
    rc, out = await cli(database_url, tmp_path, "verify", "--site", site, "--checkpoint", str(note))
    assert rc == 1
    assert "checkpoint rejected" in out


async def test_the_cli_never_makes_a_signing_key_and_refuses_bad_keys_cleanly(
    gateway: RunningGateway, database_url: str, tmp_path: Path
) -> None:
    """A mistyped data directory must not get a fresh key that signs notes nobody can check;
    a --vkey that is not one is an error message, not a traceback."""
    elsewhere = tmp_path / "not-the-gateways"
    rc, out = await cli(database_url, elsewhere, "ledger", "vkey")
    assert rc == 2, out
    assert "no ledger signing key" in out
    rc, out = await cli(
        database_url, elsewhere, "ledger", "checkpoint", "--site", gateway.keys.site
    )
    assert rc == 2, out
    assert not list(elsewhere.rglob("*.key"))
    note = tmp_path / "n.txt"
    note.write_text("not a note\n")
    rc, out = await cli(
        database_url, tmp_path, "verify", "--site", gateway.keys.site, "--checkpoint",
        str(note), "--vkey", "not-a-vkey",
    )  # fmt: skip
    assert rc == 2, out
    assert out.startswith("error:")
    assert "Traceback" not in out


async def test_cli_mistakes_are_one_line_errors_with_status_2(
    gateway: RunningGateway, database_url: str, tmp_path: Path
) -> None:
    """Found by review: each of these was a traceback (and a missing checkpoint file exited 1,
    the status that says the records were changed), and an unknown site got a signed note."""
    site = gateway.keys.site
    data_dir = tmp_path / "data"
    LedgerSigner.load_or_create(data_dir / "ledger-signing.key")
    rc, out = await cli(database_url, data_dir, "verify", "--site", site,
                        "--checkpoint", str(tmp_path / "missing.txt"))  # fmt: skip
    assert (rc, out.startswith("error: cannot read")) == (2, True), out
    rc, out = await cli(database_url, data_dir, "ledger", "checkpoint", "--site", "NO-SUCH")
    assert (rc, out.strip()) == (2, "error: no site 'NO-SUCH'")
    async with gateway.pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM ledger_checkpoints WHERE site_id = 'NO-SUCH'"
        ) == 0
    rc, out = await cli(database_url, data_dir, "ledger", "checkpoint", "--site", site,
                        "--out", str(tmp_path / "no-such-dir" / "cp.txt"))  # fmt: skip
    assert rc == 2, out
    assert "error: cannot write" in out
    assert "\n— " in out  # the note, signed and stored, was printed before
    for setting, value in (("SCREENING_PORT", "abc"), ("SCREENING_POOL_MAX_SIZE", "3")):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "screening.cli", "migrate",
            env={**os.environ, setting: value, "SCREENING_DATA_DIR": str(data_dir)},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await asyncio.wait_for(proc.communicate(), timeout=60))[0].decode()
        assert proc.returncode == 2, out
        assert out.startswith("error: SCREENING_"), out
        assert "Traceback" not in out
