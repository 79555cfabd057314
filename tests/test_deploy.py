"""deploy/ stays true to the code: every setting is in the environment example."""

from __future__ import annotations

from pathlib import Path

from screening.settings import Settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# Set by `screening serve` for its workers, not by whoever deploys it.
INTERNAL = {"prometheus_multiproc_dir"}


def test_every_setting_is_in_the_environment_example() -> None:
    example = (DEPLOY / "gateway.env.example").read_text()
    missing = [
        f"SCREENING_{name.upper()}"
        for name in Settings.model_fields
        if name not in INTERNAL and f"SCREENING_{name.upper()}" not in example
    ]
    assert missing == []

