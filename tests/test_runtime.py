"""screening.runtime: what a started gateway does to its process's garbage collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from screening.runtime import DEFAULT_YOUNG_THRESHOLD, tune_collector
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


def test_the_setting_defaults_to_the_module_default() -> None:
    assert Settings().gc_young_threshold == DEFAULT_YOUNG_THRESHOLD
