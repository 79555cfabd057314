"""screening.runtime: what a started gateway does to its process: its event loop, the garbage
collector, and how it stops on signals."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import warnings
from collections.abc import Iterator

import pytest
import uvloop
from pydantic import ValidationError

from screening.runtime import (
    DEFAULT_YOUNG_THRESHOLD,
    StartupError,
    loop_factory,
    loop_name,
    run_server,
    tune_collector,
)
from screening.settings import Settings


@pytest.fixture
def restore_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_collector")
def test_tune_collector_freezes_startup_objects_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    _, older, oldest = gc.get_threshold()
    made_at_startup = [object() for _ in range(10)]  # noqa: F841 - alive while frozen
    tune_collector(12_345)
    assert gc.get_freeze_count() > 0  # what was alive is out of the collector's scans
    assert gc.get_threshold() == (12_345, older, oldest)  # the older generations as they were
    assert gc.isenabled()  # cycles are still collected


async def _running_loop() -> tuple[str, type[asyncio.AbstractEventLoop]]:
    await asyncio.sleep(0)
    return loop_name(), type(asyncio.get_running_loop())


def test_a_server_runs_on_uvloop_by_default_and_on_asyncio_when_asked() -> None:
    assert Settings().event_loop == "auto"
    name, kind = run_server(_running_loop())
    assert (name, kind) == ("uvloop", uvloop.Loop)
    name, kind = run_server(_running_loop(), "uvloop")
    assert name == "uvloop"
    name, kind = run_server(_running_loop(), "asyncio")
    assert name == "asyncio"
    assert not issubclass(kind, uvloop.Loop)
    assert loop_factory("asyncio") is None


def test_without_uvloop_auto_falls_back_and_uvloop_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` raises ImportError on
    assert loop_factory("auto") is None
    assert run_server(_running_loop())[0] == "asyncio"
    main = _running_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited" left behind
        with pytest.raises(StartupError, match="uvloop is not installed"):
            run_server(main, "uvloop")
    assert main.cr_frame is None  # closed


def test_the_event_loop_setting_takes_only_the_known_loops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCREENING_EVENT_LOOP", "asyncio")
    assert Settings().event_loop == "asyncio"
    monkeypatch.setenv("SCREENING_EVENT_LOOP", "trio")
    with pytest.raises(ValidationError):
        Settings()


def test_the_setting_defaults_to_the_module_default() -> None:
    assert Settings().gc_young_threshold == DEFAULT_YOUNG_THRESHOLD


# Run in a child: the signals are real, and the test process keeps its own handlers.
SIGNALS_CHILD = """
import asyncio, os, signal
from screening.runtime import stop_on_signals

async def main():
    stop = asyncio.Event()
    stop_on_signals(stop)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(stop.wait(), 5)
    print(signal.getsignal(signal.SIGINT) is signal.default_int_handler,
          signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)

asyncio.run(main())
"""


def test_the_first_signal_stops_gracefully_and_a_second_acts_as_by_default() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGNALS_CHILD], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # After the first: Ctrl-C raises KeyboardInterrupt again, SIGTERM terminates.
    assert done.stdout.split() == ["True", "True"]


WORKER_SIGNALS_CHILD = """
import asyncio, os, signal
from screening.runtime import stop_on_signals

async def main():
    stop = asyncio.Event()
    stop_on_signals(stop, second_ends=False)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(stop.wait(), 5)
    os.kill(os.getpid(), signal.SIGTERM)  # the service manager's, after the supervisor's
    await asyncio.sleep(0.2)
    print("still draining")

asyncio.run(main())
"""


def test_a_worker_keeps_draining_when_a_second_sigterm_comes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WORKER_SIGNALS_CHILD], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "still draining"


def test_an_empty_setting_is_the_same_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """`SCREENING_DATABASE_URL=` in an environment file: the embedded database, not a URL of
    nothing (libpq's defaults); an empty path is the default path, not the current directory."""
    for name in ("DATABASE_URL", "MODEL_PATH", "LEDGER_KEY_FILE", "PII_KEYS_JSON", "PORT"):
        monkeypatch.setenv(f"SCREENING_{name}", "")
    settings = Settings()
    defaults = Settings.model_fields
    assert settings.database_url is None
    assert settings.pii_keys_json is None
    assert settings.port == defaults["port"].default
    assert settings.model_path == defaults["model_path"].default
    assert settings.ledger_key_file == defaults["ledger_key_file"].default


def test_a_future_skew_past_a_week_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tolerance that large bounds nothing, and one huge enough overflows the latest time
    every request works out: refused when the settings are read, not on every request."""
    monkeypatch.setenv("SCREENING_MAX_FUTURE_SKEW_S", str(7 * 86400))
    assert Settings().max_future_skew_s == 7 * 86400
    monkeypatch.setenv("SCREENING_MAX_FUTURE_SKEW_S", "1e12")
    with pytest.raises(ValidationError, match="max_future_skew_s"):
        Settings()
