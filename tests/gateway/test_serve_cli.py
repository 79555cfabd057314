"""`screening serve` as a service manager runs it: SIGTERM stops it the graceful way."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from screening.cli import main
from screening.services import pii
from tests.conftest import make_keys
from tests.gateway.events import parcel_flow
from tests.gateway.serving import (
    TEST_PII_KEYS,
    free_port,
    listening,
    serve_env,
    serve_until_exit,
    start_serve,
)


async def test_sigterm_closes_streams_and_exits_cleanly(
    database_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    keys = await make_keys(pool)
    port = free_port()
    proc = await start_serve(serve_env(database_url, tmp_path, port))
    try:
        # By default a gateway runs on uvloop (screening.runtime): this test serves on it.
        assert (await listening(proc))[0].endswith("(event loop: uvloop)")
        base = f"http://127.0.0.1:{port}"
        station = {"Authorization": f"Bearer {keys.by_role['station']}"}
        police = {"Authorization": f"Bearer {keys.by_role['police']}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/v1/events", json=parcel_flow(keys.site, "ST0000000001"), headers=station
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["accepted"] == 6
            ws = await http.ws_connect(f"{base}/v1/stations/stream", headers=station)
            feed = await http.get(f"{base}/v1/alerts/stream", headers=police)
            assert feed.status == 200
            await feed.content.readline()  # the stream is open (its starting position)

            started = asyncio.get_running_loop().time()
            proc.send_signal(signal.SIGTERM)
            closing = await asyncio.wait_for(ws.receive(), timeout=15)
            assert closing.type is aiohttp.WSMsgType.CLOSE
            assert closing.data == aiohttp.WSCloseCode.GOING_AWAY
            # The police feed ends instead of holding the stop until it is cancelled.
            rest = await asyncio.wait_for(feed.content.read(), timeout=15)
            assert b"event: alert" not in rest
            feed.release()
            await ws.close()
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
        # Well inside the drain limit: nothing waited for a stream to time out.
        assert asyncio.get_running_loop().time() - started < 8
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_gateway_asked_for_asyncio_serves_on_it(
    database_url: str, pool: asyncpg.Pool[Any], tmp_path: Path
) -> None:
    keys = await make_keys(pool)
    port = free_port()
    env = {**serve_env(database_url, tmp_path, port), "SCREENING_EVENT_LOOP": "asyncio"}
    proc = await start_serve(env)
    try:
        assert (await listening(proc))[0].endswith("(event loop: asyncio)")
        station = {"Authorization": f"Bearer {keys.by_role['station']}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/v1/events",
                json=parcel_flow(keys.site, "ST0000000002"),
                headers=station,
            ) as resp,
        ):
            assert resp.status == 200
            assert (await resp.json())["accepted"] == 6
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_start_that_fails_exits_instead_of_hanging(
    database_url: str, tmp_path: Path
) -> None:
    """Found by review: a ledger key file that could not be read failed the start after the
    writer and the alert tasks had started; nothing stopped them, and closing the pool waited
    for good on the connection one of them held: no listening, no exit, no restart. Keys now
    load before anything starts (a failure after that is test_ops'
    test_a_start_failing_late_stops_every_part_already_started)."""
    (tmp_path / "ledger-signing.key").write_text("not a key\n")
    status, err = await serve_until_exit(serve_env(database_url, tmp_path, free_port()))
    assert status != 0
    assert "ledger" in err
    assert "gateway listening" not in err


async def test_a_port_in_use_is_a_one_line_error_and_an_exit(
    database_url: str, tmp_path: Path
) -> None:
    """Found by review: the bind error was never printed and the process never exited (the
    app's tasks held the pool open), so a service manager never restarted it."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        status, err = await serve_until_exit(serve_env(database_url, tmp_path, port))
    finally:
        taken.close()
    assert status == 2, err
    assert f"error: cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


async def test_workers_do_not_share_a_port_another_gateway_listens_on(
    database_url: str, tmp_path: Path
) -> None:
    """Workers bind with SO_REUSEPORT, which a running gateway's workers (same user) would let
    them share: an old version left running would silently take part of the traffic."""
    running = socket.socket()
    running.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    running.bind(("127.0.0.1", 0))
    running.listen()
    try:
        port = running.getsockname()[1]
        env = {**serve_env(database_url, tmp_path, port), "SCREENING_WORKERS": "2"}
        status, err = await serve_until_exit(env)
    finally:
        running.close()
    assert status == 2, err
    assert f"error: cannot listen on 127.0.0.1:{port}" in err
    assert "workers" not in err  # refused before any worker started


async def test_a_model_path_with_no_model_is_a_one_line_error_at_start(
    database_url: str, tmp_path: Path
) -> None:
    """Not a gateway that starts, says it is ready, and answers every scan 503."""
    missing = tmp_path / "models" / "detector.onnx"
    env = {**serve_env(database_url, tmp_path, free_port()), "SCREENING_MODEL_PATH": str(missing)}
    status, err = await serve_until_exit(env)
    assert status == 2, err
    assert f"error: no X-ray model at {missing}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_gateway_with_other_personal_data_keys_than_the_database_refuses_to_start(
    database_url: str, pool: asyncpg.Pool[Any], tmp_path: Path, workers: str
) -> None:
    """A second gateway (or a container recreated without its data directory) that made its
    own key file would answer every station retry 409 conflict, and open no record sealed by
    the others: it says so, and does not start."""
    assert await pii.keys_match(pool, TEST_PII_KEYS)  # the keys this database is served with
    env = {**serve_env(database_url, tmp_path, free_port(), pii_keys=False),
           "SCREENING_WORKERS": workers}  # fmt: skip
    status, err = await serve_until_exit(env)
    assert status == 2, err
    assert "error: the personal-data keys" in err
    assert "gateway listening" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [["--rate", "0"], ["--scanners", "-1"], ["--break-share", "1.5"], ["--sites", "x"]],
)
def test_demo_arguments_out_of_range_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", *argv])
    assert exited.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_the_demo_refuses_a_configured_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The demo writes demo sites, keys and events for good: not into the database a shell
    that sourced the gateway's environment file points at."""
    monkeypatch.setenv("SCREENING_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/prod")
    monkeypatch.setenv("SCREENING_DATA_DIR", str(tmp_path))
    assert main(["demo", "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "unset SCREENING_DATABASE_URL" in err
    assert not any(tmp_path.iterdir())  # nothing started, nothing written
