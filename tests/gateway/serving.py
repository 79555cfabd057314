"""Running `screening serve` as a subprocess, as a service manager runs it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bench.common import free_port
from screening.protection import PersonalDataVault

__all__ = ["TEST_PII_KEYS", "alive", "children", "free_port", "listening", "screening", "serve_env",
           "serve_until_exit", "serving", "start_serve"]


# The personal-data keys of every gateway the tests serve: one database needs one set (a
# gateway refuses to start with another: screening.services.pii.keys_match). Fixed, not
# random, so that an external test database kept between runs still matches.
TEST_PII_KEYS = PersonalDataVault(
    keys={"k1": bytes(range(32))}, active_key_id="k1", hmac_key=bytes(range(64, 96))
)


def serve_env(
    database_url: str, data_dir: Path, port: int, *, pii_keys: bool = True
) -> dict[str, str]:
    """The environment of `screening serve` for a test; ``pii_keys``: with TEST_PII_KEYS in
    SCREENING_PII_KEYS_JSON (else the key file under the data directory)."""
    env = {
        **os.environ,
        "SCREENING_DATABASE_URL": database_url,
        "SCREENING_DATA_DIR": str(data_dir),
        "SCREENING_PORT": str(port),
        "SCREENING_LOG_JSON": "false",
        "SCREENING_ALERT_RELAY_ENABLED": "false",
    }
    if pii_keys:
        env["SCREENING_PII_KEYS_JSON"] = json.dumps(TEST_PII_KEYS.to_json_dict())
    else:
        env.pop("SCREENING_PII_KEYS_JSON", None)
    return env


async def start_serve(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "screening.cli", "serve", *args,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def serve_until_exit(env: dict[str, str]) -> tuple[int, str]:
    """`screening serve` that is expected to exit by itself: its status and stderr (killed,
    and the test failed, if it is still running after 60 s)."""
    proc = await start_serve(env)
    assert proc.stderr is not None
    try:
        status = await asyncio.wait_for(proc.wait(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return status, (await proc.stderr.read()).decode()


@contextlib.asynccontextmanager
async def serving(
    env: dict[str, str], *args: str, processes: int = 1
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`screening serve *args`, once ``processes`` gateway processes listen; killed on leaving
    if it is still running."""
    proc = await start_serve(env, *args)
    try:
        await listening(proc, processes)
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def listening(proc: asyncio.subprocess.Process, processes: int = 1) -> list[str]:
    """Until ``processes`` gateway processes have said they listen: those lines. A start that
    stalls for 60 s fails with everything the gateway said until then."""
    assert proc.stderr is not None
    said, lines = [], []
    while len(said) < processes:
        try:
            line = await asyncio.wait_for(proc.stderr.readline(), timeout=60)
        except TimeoutError:
            raise AssertionError(
                f"no line from the gateway for 60 s; {len(said)} of {processes} process(es) "
                "listening; it said:\n" + "".join(lines)
            ) from None
        assert line, "the gateway exited before listening; it said:\n" + "".join(lines)
        text = line.decode(errors="replace")
        lines.append(text)
        if "gateway listening" in text:
            said.append(text.strip())
    return said


def children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from /proc: Linux)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid and stat[0] != "Z":
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def screening(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run an admin command (``screening ARGS``) as an operator would: status and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "screening.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()
