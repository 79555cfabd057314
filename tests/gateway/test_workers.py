"""`screening serve --workers N`: several gateway processes on one port (screening.workers)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from prometheus_client.mmap_dict import MmapedDict

from screening import workers
from screening.cli import main
from screening.workers import Supervisor, first_beat, last_beat
from tests.conftest import Keys, make_keys
from tests.gateway.events import parcel_flow
from tests.gateway.serving import alive, children, free_port, listening, serve_env, serving


async def _until(check: Any) -> None:
    async with asyncio.timeout(20):
        while not check():  # noqa: ASYNC110 - other processes: nothing to await
            await asyncio.sleep(0.1)


def _accepted_total(metrics_text: str) -> float:
    found = re.findall(r'^screening_events_total\{[^}]*result="accepted"[^}]*\} (\S+)$',
                       metrics_text, re.MULTILINE)  # fmt: skip
    return sum(float(v) for v in found)


def _accepted_in(path: Path) -> float:
    """One worker's accepted-events count, from its prometheus_client multiprocess file."""
    if not path.exists():
        return 0.0
    values = MmapedDict(str(path), read_mode=True)
    try:
        return sum(value for key, value, _ in values.read_all_values()
                   if '"screening_events_total"' in key and '"accepted"' in key)  # fmt: skip
    finally:
        values.close()


@contextlib.asynccontextmanager
async def two_workers(
    database_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, Keys]]:
    """`screening serve --workers 2` once both listen: the supervisor, the base URL, keys."""
    keys = await make_keys(pool)
    port = free_port()
    env = serve_env(database_url, tmp_path, port)
    async with serving(env, "--workers", "2", processes=2) as proc:
        yield proc, f"http://127.0.0.1:{port}", keys


async def post_parcels(base: str, keys: Keys, prefix: str, n: int) -> None:
    """``n`` parcel flows, each on a new connection (the kernel spreads connections, not
    requests), every event accepted."""
    station = {"Authorization": f"Bearer {keys.by_role['station']}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        for i in range(n):
            flow = parcel_flow(keys.site, f"{prefix}{i:010d}")
            async with http.post(f"{base}/v1/events", json=flow, headers=station) as resp:
                assert resp.status == 200
                assert (await resp.json())["accepted"] == 6


async def test_workers_share_the_port_sum_their_metrics_and_stop_on_sigterm(
    database_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    # Run directories already in the data directory: one left by a supervisor that was killed
    # (nobody holds its lock), one of a supervisor still running (this test holds the lock),
    # both named with pid 1, as every supervisor is in its own container.
    stale, running = tmp_path / "run" / "1-aaaaaaaa", tmp_path / "run" / "1-bbbbbbbb"
    for path in (stale, running):
        (path / "metrics").mkdir(parents=True)
        (path / "metrics" / "counter_1.db").write_bytes(b"")
        (path / "lock").write_bytes(b"")
    held = os.open(running / "lock", os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    async with two_workers(database_url, pool, tmp_path) as (proc, base, keys):
        (mine,) = [p for p in (tmp_path / "run").iterdir() if p.name.startswith(f"{proc.pid}-")]
        assert not stale.exists()
        assert (running / "metrics" / "counter_1.db").exists()
        pids = children(proc.pid)
        assert len(pids) == 2
        await post_parcels(base, keys, "WK", 12)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            # Both workers served: each counted events in its own file.
            served = {pid: _accepted_in(mine / "metrics" / f"counter_{pid}.db") for pid in pids}
            # Each worker beats, from its event loop, in its own heartbeat file.
            assert {int(p.name) for p in (mine / "heartbeats").iterdir()} == pids
            assert all(n > 0 for n in served.values()), served
            assert sum(served.values()) == 72
            # Whichever worker answers /metrics reports the sum over both.
            for _ in range(4):
                async with http.get(f"{base}/metrics") as resp:
                    assert _accepted_total(await resp.text()) == 72
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0
        assert not any(alive(pid) for pid in pids)
        assert not mine.exists()  # removed by its supervisor on the way out
        assert running.exists()  # another supervisor's is not this one's to remove
    os.close(held)


async def test_a_worker_that_dies_is_replaced(
    database_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    async with two_workers(database_url, pool, tmp_path) as (proc, base, keys):
        first = children(proc.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        await listening(proc)  # its replacement
        now = children(proc.pid)
        assert len(now) == 2
        assert victim not in now
        assert (first - {victim}) <= now  # the other worker served on
        await post_parcels(base, keys, "WR", 6)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_a_worker_whose_event_loop_stops_is_killed_and_replaced(
    database_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    """A stopped (SIGSTOP) worker stands for one stuck in a blocking call: the kernel still
    hands it connections, which nobody answers, until the supervisor replaces it."""
    keys = await make_keys(pool)
    port = free_port()
    env = {**serve_env(database_url, tmp_path, port), "SCREENING_WORKER_WEDGED_S": "2"}
    async with serving(env, "--workers", "2", processes=2) as proc:
        first = children(proc.pid)
        victim = min(first)
        os.kill(victim, signal.SIGSTOP)
        await listening(proc)  # its replacement, once its heartbeat was 2 s old
        now = children(proc.pid)
        assert len(now) == 2
        assert victim not in now
        assert not alive(victim)
        # Every connection answered: none lands on the stopped worker.
        await post_parcels(f"http://127.0.0.1:{port}", keys, "WS", 6)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_supervisor_kills_a_worker_only_once_its_heartbeat_stops(tmp_path: Path) -> None:
    # Beats for a second, then blocks its event loop; no heartbeat file: the test's own
    # "worker" that never beats is left alone however long it runs.
    stuck = (
        "import asyncio, sys, time\n"
        "from pathlib import Path\n"
        "from screening.workers import beat\n"
        "async def main():\n"
        "    asyncio.create_task(beat(Path(sys.argv[1])))\n"
        "    await asyncio.sleep(1.0)\n"
        "    time.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    beats = tmp_path / "heartbeats"
    beats.mkdir()
    quiet = Supervisor(1, [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ),
                       heartbeats=beats, wedged_s=0.5)  # fmt: skip
    supervisor = Supervisor(1, [sys.executable, "-c", stuck, str(beats)], dict(os.environ),
                            heartbeats=beats, wedged_s=1.5)  # fmt: skip
    runs = [asyncio.create_task(s.run()) for s in (quiet, supervisor)]
    try:
        async with asyncio.timeout(30):
            while not supervisor.procs:  # noqa: ASYNC110 - started by the supervisor
                await asyncio.sleep(0.05)
            first = supervisor.procs[0]
            assert await first.wait() == -signal.SIGKILL  # killed, at about 2.5 s
            while supervisor.procs[0] is first:  # noqa: ASYNC110 - restarted by the supervisor
                await asyncio.sleep(0.05)
            assert not (beats / str(first.pid)).exists()  # the dead worker's beat is gone
            assert quiet.procs[0].returncode is None  # never beat: not judged
            for s in (quiet, supervisor):
                s._on_signal()
            assert await asyncio.gather(*runs) == [0, 0]
    finally:
        for run in runs:
            run.cancel()
        await asyncio.gather(*runs, return_exceptions=True)


async def test_workers_stop_when_their_supervisor_is_killed(
    database_url: str, tmp_path: Path
) -> None:
    env = serve_env(database_url, tmp_path, free_port())
    async with serving(env, "--workers", "2", processes=2) as proc:
        pids = children(proc.pid)
        proc.kill()  # no SIGTERM passed on: the workers notice on their own
        await proc.wait()
        await _until(lambda: not any(alive(pid) for pid in pids))


async def test_supervisor_gives_up_on_workers_that_keep_exiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers, "RESTART_DELAY_S", 0.01)
    starts: list[int] = []
    supervisor = Supervisor(2, [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    real_start = supervisor._start

    async def counted(slot: int) -> asyncio.subprocess.Process:
        starts.append(slot)
        return await real_start(slot)

    monkeypatch.setattr(supervisor, "_start", counted)
    assert await asyncio.wait_for(supervisor.run(), timeout=30) == 1
    # Each exit was counted against a budget of MAX_RESTARTS per worker; the one past it
    # stopped everything, and no slot started a worker after that (a slot pausing before its
    # restart then does not restart).
    budget = workers.MAX_RESTARTS * 2
    assert len(supervisor.restarts) == budget + 1
    assert budget + 1 <= len(starts) <= budget + 2
    assert all(p.returncode is not None for p in supervisor.procs.values())  # none left


async def test_a_second_signal_kills_workers_that_do_not_stop() -> None:
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    supervisor = Supervisor(2, [sys.executable, "-c", stubborn], dict(os.environ))
    running = asyncio.create_task(supervisor.run())
    try:
        async with asyncio.timeout(20):
            while len(supervisor.procs) < 2:  # noqa: ASYNC110 - started by the supervisor
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # let them install their SIGTERM handling
            supervisor._on_signal()  # SIGTERM: passed on, and ignored by these workers
            await asyncio.sleep(0.5)
            assert all(p.returncode is None for p in supervisor.procs.values())
            supervisor._on_signal()  # a second: no more waiting
            assert await running == 0
        assert all(p.returncode == -signal.SIGKILL for p in supervisor.procs.values())
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


@pytest.mark.parametrize("count", ["0", "65"])
def test_serve_refuses_a_worker_count_out_of_range(
    count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--workers", count])
    assert exited.value.code == 2
    assert "must be from 1 to 64" in capsys.readouterr().err


def test_a_worker_has_beaten_once_before_it_says_it_listens(tmp_path: Path) -> None:
    """The supervisor takes a worker with no beat as still starting and never replaces it; a
    worker stopped between saying it listens and its beat task's first run (one CI run of
    the test above) would stay for good. The first beat is written before the event loop
    runs again."""
    fd = first_beat(tmp_path)
    try:
        beaten = last_beat(tmp_path / str(os.getpid()))
        assert beaten is not None
        assert time.monotonic() - beaten < 5
    finally:
        os.close(fd)
