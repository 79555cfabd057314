"""Process-level settings for a long-running gateway process (not for each app: tests make many):
its event loop, how it stops on a signal, and the garbage collector.

The event loop. ``run_server`` runs a server process's main coroutine on uvloop (libuv) where it
is installed and the settings allow (``SCREENING_EVENT_LOOP``), else on asyncio's own loop
(settings.py has what it measured). Only servers run on it: the supervisor of several workers
(screening.workers) starts them with ``process_group=``, which uvloop's subprocess support does
not take.

The cyclic garbage collector. CPython runs a young-generation collection whenever the tracked
objects allocated since the last one outnumber those freed by 700 (the default threshold). A
gateway under load keeps thousands of young objects alive in its in-flight requests (parsed
bodies, validated events, futures waiting on a group commit), so that count crossed 700 every
few milliseconds: at 256 concurrent single-event POSTs the collector ran about 150 times a
second and took 5-10% of the process's CPU, most of it re-scanning the same live requests, and
each full collection also walked every object made at import (schemas, routes, metrics).

``tune_collector`` runs once the app is built: one full collection, then ``gc.freeze()`` moves
everything alive to the permanent generation (never scanned again; such objects are still
freed by reference counting), and the young threshold rises so that collections run only
when garbage really accumulates. Reference cycles are still collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]

DEFAULT_YOUNG_THRESHOLD = 10_000

# How long a stopping gateway lets requests in flight finish before cancelling them; the stop
# as a whole must fit the service manager's limit (TimeoutStopSec=30 in deploy/).
SHUTDOWN_DRAIN_S = 10.0


class StartupError(Exception):
    """The gateway cannot start as configured (a port it cannot listen on, say): said in one
    line by the CLI, exit status 2."""


def loop_factory(choice: EventLoopChoice) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``choice`` names, as a factory (None: asyncio's default loop). "auto" is
    uvloop when it can be imported; "uvloop" when it cannot is a StartupError."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise StartupError("SCREENING_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_server(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """``asyncio.run(main)`` on the event loop ``choice`` names (``loop_factory``)."""
    try:
        factory = loop_factory(choice)
    except StartupError:
        main.close()  # never awaited: say so quietly, not with a RuntimeWarning
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def loop_name() -> str:
    """The running loop's kind, for the start-up line: "uvloop" or "asyncio"."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


def stop_on_signals(stop: asyncio.Event, *, second_ends: bool = True) -> None:
    """SIGTERM (a service manager, a container runtime) and SIGINT (Ctrl-C) both stop the
    gateway the graceful way; without a handler SIGTERM kills the process where it stands.
    The first one only: a second (Ctrl-C again during a stop that hangs) acts as it would
    without these handlers, ending the process at once.

    Not so with ``second_ends=False`` (a worker under screening.workers): a service manager
    that signals the whole process group and the supervisor passing its signal on would
    otherwise end the worker mid-drain. Its supervisor kills a worker that hangs."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def first() -> None:
        stop.set()
        if second_ends:
            for sig in signals:
                loop.remove_signal_handler(sig)  # back to Python's defaults

    for sig in signals:
        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform
            loop.add_signal_handler(sig, first)


def tune_collector(young_threshold: int = DEFAULT_YOUNG_THRESHOLD) -> None:
    """Freeze what start-up made and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
