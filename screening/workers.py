"""`screening serve` with several gateway processes: a supervisor and its workers.

One Python process runs on one core, and a loaded gateway keeps its core busy (parsing, validating
and sealing events between group commits). With ``SCREENING_WORKERS=N`` the supervisor starts N
copies of the gateway (``screening serve --worker-of PID``), each with its own event loop, pool
and group-commit writer, all listening on the one port with SO_REUSEPORT so that the kernel spreads
connections over them. Gateways already share everything through PostgreSQL (see README,
"several gateways"), so the workers need nothing from each other.

The supervisor:
- applies migrations and makes the data directory's keys (personal-data keys, ledger signing key)
  before any worker starts, so workers never race to create them;
- gives the workers one Prometheus multiprocess directory, its own (under
  ``data_dir/run/<its pid>-<random>``, locked while it runs, removed when it stops), so that
  /metrics, whichever worker answers it, reports the sum over all of them and nobody else's;
- kills and replaces a worker whose event loop has stopped running (a blocking call, a deadlock):
  each worker writes a heartbeat from its loop every ``HEARTBEAT_S``, and one that has not beaten
  for ``worker_wedged_s`` (settings) is killed, as a process that exits would be restarted; a
  wedged worker still accepts connections (the kernel does), so nothing else would notice it;
- restarts a worker that dies (at most ``MAX_RESTARTS`` per worker in ``RESTART_WINDOW_S``; past
  that the fault is not transient and the supervisor stops, exit status 1, for the service
  manager);
- on SIGTERM or SIGINT passes SIGTERM on to every worker, which stops the graceful way
  (screening.runtime), and waits for them; a worker still running after ``STOP_WAIT_S`` is
  killed, and a second signal to the supervisor kills them all at once.

Workers run in their own process group, so a Ctrl-C at a terminal reaches the supervisor alone.
A worker ignores a second SIGTERM (a service manager may signal every process of the service as
well): the supervisor kills one that hangs. A worker whose supervisor has gone (killed outright)
stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import multiprocess

from screening.runtime import SHUTDOWN_DRAIN_S
from screening.settings import Settings

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
RESTART_DELAY_S = 1.0
# A worker drains for SHUTDOWN_DRAIN_S and then stops its parts (each bounded, and quick unless
# something is stuck); a worker killed past this has nothing unanswered reported accepted. Fits
# the service manager's stop timeout (TimeoutStopSec=30 in deploy/).
STOP_WAIT_S = SHUTDOWN_DRAIN_S + 15.0
PARENT_CHECK_S = 1.0
HEARTBEAT_S = 1.0  # a worker's heartbeat period; the supervisor looks as often
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when it is imported


@dataclass(slots=True)
class RunDir:
    """A supervisor's own directory, ``data_dir/run/<pid>-<random>``: two supervisors sharing a
    data directory (a second gateway on another port, or in another container, where every
    supervisor may be pid 1) keep apart metric sums and heartbeats. The supervisor holds an
    exclusive lock on its ``lock`` file while it runs: a directory whose lock can be taken
    belongs to a supervisor that is gone, whatever its pid means in this namespace."""

    path: Path
    _lock: int | None = None

    @classmethod
    def of(cls, settings: Settings) -> RunDir:
        return cls(settings.data_dir / "run" / f"{os.getpid()}-{secrets.token_hex(4)}")

    @property
    def metrics(self) -> Path:
        return self.path / "metrics"

    @property
    def heartbeats(self) -> Path:
        return self.path / "heartbeats"

    def make_fresh(self) -> None:
        """Made empty and locked, and the directories of supervisors that are gone (killed
        before they could clean up) removed."""
        shutil.rmtree(self.path, ignore_errors=True)
        for path in (self.metrics, self.heartbeats):
            path.mkdir(parents=True, mode=0o700)
        self._lock = _hold_lock(self.path / "lock")
        for other in self.path.parent.iterdir():
            if other != self.path and _abandoned(other):
                shutil.rmtree(other, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None


def _hold_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _abandoned(run: Path) -> bool:
    """Whether ``run`` is another supervisor's directory that nobody holds any more."""
    try:
        fd = os.open(run / "lock", os.O_RDWR)
    except FileNotFoundError:
        return True  # never locked, or half removed: nobody's
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its supervisor runs
    finally:
        os.close(fd)
    return True


def worker_command(heartbeats: Path) -> list[str]:
    return [sys.executable, "-m", "screening.cli", "serve", "--worker-of", str(os.getpid()),
            "--heartbeats", str(heartbeats)]  # fmt: skip


def worker_env(dsn: str, metrics: Path) -> dict[str, str]:
    """The environment of a worker: the supervisor's, with the database it resolved (an embedded
    PostgreSQL is started by the supervisor, not by each worker) and the metrics directory."""
    return {
        **os.environ,
        "SCREENING_DATABASE_URL": dsn,
        "SCREENING_WORKERS": "1",
        METRICS_ENV: str(metrics),
    }


class Supervisor:
    """Starts ``count`` workers, keeps them running, and stops them on a signal.

    ``heartbeats``: the directory the workers beat in (``beat``), each in the file named by its
    pid; a worker whose beat is older than ``wedged_s`` is killed and replaced. None: workers
    are only watched for exiting."""

    def __init__(
        self,
        count: int,
        command: list[str],
        env: dict[str, str],
        heartbeats: Path | None = None,
        wedged_s: float = 30.0,
    ) -> None:
        self.count = count
        self.command = command
        self.env = env
        self.heartbeats = heartbeats
        self.wedged_s = wedged_s
        self.metrics = env.get(METRICS_ENV)
        self.procs: dict[int, asyncio.subprocess.Process] = {}  # slot -> its current process
        self.restarts: deque[float] = deque()
        self.stop = asyncio.Event()
        self.failed = False

    async def _start(self, slot: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(*self.command, env=self.env, process_group=0)
        self.procs[slot] = proc
        log.info("gateway worker %d started, pid %d", slot, proc.pid)
        return proc

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.restarts.append(now)
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
            self.restarts.popleft()
        return len(self.restarts) <= MAX_RESTARTS * self.count

    async def _keep(self, slot: int) -> None:
        """One worker slot: its worker runs until the stop, and is started again if it exits.
        The slot stops its own worker, so a worker started as the stop came is stopped too."""
        while not self.stop.is_set():
            proc = await self._start(slot)
            exited = asyncio.ensure_future(proc.wait())
            stopping = asyncio.ensure_future(self.stop.wait())
            wedged = asyncio.ensure_future(self._wedged(proc.pid))
            try:
                await asyncio.wait(
                    {exited, stopping, wedged}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                stopping.cancel()
                wedged.cancel()
                if not exited.done() and wedged.done() and not wedged.cancelled():
                    log.error("gateway worker %d (pid %d) has not run its event loop for %.0f s; "
                              "killing it", slot, proc.pid, self.wedged_s)  # fmt: skip
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()  # SIGTERM would wait for the loop that is stuck
                    await exited
                elif not exited.done():  # the stop, or this task cancelled: the worker goes too
                    await _terminate(proc)
            self._mark_dead(proc.pid)
            if self.stop.is_set():
                return
            log.error("gateway worker %d (pid %d) exited with status %s", slot, proc.pid,
                      proc.returncode)  # fmt: skip
            if not self._may_restart():
                log.critical("gateway workers keep exiting (%d restarts in %.0f s); stopping",
                             len(self.restarts) - 1, RESTART_WINDOW_S)  # fmt: skip
                self.failed = True
                self.stop.set()
                return
            with contextlib.suppress(TimeoutError):  # a pause, cut short by the stop
                await asyncio.wait_for(self.stop.wait(), RESTART_DELAY_S)

    def _on_signal(self) -> None:
        if not self.stop.is_set():
            self.stop.set()  # the graceful stop
            return
        log.warning("a second signal: killing the gateway workers")
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()

    async def run(self) -> int:
        """Until SIGTERM or SIGINT (or workers failing for good); the exit status."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGINT, signal.SIGTERM)
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal)
        slots = [asyncio.create_task(self._keep(i), name=f"worker-{i}") for i in range(self.count)]
        try:
            await asyncio.gather(*slots)  # each slot ends once the stop is set
        finally:
            for task in slots:  # only when this was cancelled: each kills its worker
                task.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
            for sig in signals:
                loop.remove_signal_handler(sig)
        return 1 if self.failed else 0

    async def _wedged(self, pid: int) -> None:
        """Returns once worker ``pid`` has beaten and then not for ``wedged_s``; never when
        there are no heartbeats. A worker that has not beaten yet is still starting."""
        if self.heartbeats is None:
            await asyncio.Future()  # forever (cancelled with its slot's wait)
            return
        path = self.heartbeats / str(pid)
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            last = last_beat(path)
            if last is not None and time.monotonic() - last > self.wedged_s:
                return

    def _mark_dead(self, pid: int) -> None:
        """Drop a dead worker's live gauges (open station streams, queue depth) from the sums,
        and its heartbeat; its counters and histograms stay counted."""
        if self.metrics is not None:
            multiprocess.mark_process_dead(pid, self.metrics)  # type: ignore[no-untyped-call]
        if self.heartbeats is not None:
            (self.heartbeats / str(pid)).unlink(missing_ok=True)


async def watch_parent(stop: asyncio.Event, supervisor: int) -> None:
    """In a worker: stop when the supervisor (pid ``supervisor``, given on the command line, so
    that one gone before the worker looked is noticed too) is gone, killed outright (it would
    have sent SIGTERM otherwise), instead of serving on without anyone to restart or stop it."""
    while not stop.is_set():
        if os.getppid() != supervisor:
            log.error("the supervisor is gone; stopping")
            stop.set()
            return
        await asyncio.sleep(PARENT_CHECK_S)


async def beat(heartbeats: Path) -> None:
    """In a worker: write the time to ``heartbeats/<pid>`` every ``HEARTBEAT_S``, from the event
    loop, so the time stops when the loop does. CLOCK_MONOTONIC is one clock for every process
    of the machine (unlike the wall clock, it does not jump when the time is set)."""
    await keep_beating(first_beat(heartbeats))


def first_beat(heartbeats: Path) -> int:
    """Write the worker's first beat now, before it says it listens; the open file, for
    ``keep_beating``. A worker that has not beaten is taken as still starting and is never
    killed, so one wedged between saying so and its beat task's first run would stay."""
    fd = os.open(heartbeats / str(os.getpid()), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    _write_beat(fd)
    return fd


async def keep_beating(fd: int) -> None:
    """Beat every ``HEARTBEAT_S`` from the event loop into ``fd`` (closed when cancelled)."""
    try:
        while True:
            _write_beat(fd)
            await asyncio.sleep(HEARTBEAT_S)
    finally:
        os.close(fd)


def _write_beat(fd: int) -> None:
    os.pwrite(fd, f"{time.monotonic():024.6f}".encode(), 0)  # fixed width: one write


def last_beat(path: Path) -> float | None:
    """The monotonic time of a worker's last beat; None before its first (or unreadable)."""
    try:
        return float(path.read_bytes())
    except (OSError, ValueError):
        return None


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the graceful stop), then SIGKILL if it has not stopped within STOP_WAIT_S."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_WAIT_S)
    except asyncio.CancelledError:  # the supervisor is being torn down: no more waiting
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    except TimeoutError:
        log.critical("gateway worker %d did not stop in %.0f s; killing it", proc.pid,
                     STOP_WAIT_S)  # fmt: skip
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
