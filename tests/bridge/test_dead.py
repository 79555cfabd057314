"""The operator's tool for dead scans: list, export, retry, and discard only what was exported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from firmware_bridge.dead import main
from firmware_bridge.spool import Spool, SpoolRecord

from .test_uplink import PNG_1PX, record


@pytest.fixture
def spool_path(tmp_path: Path) -> Path:
    path = tmp_path / "spool.sqlite3"
    spool = Spool(path)
    spool.put(record("dead-1", "SF1"), 1.0)
    spool.put(SpoolRecord("dead-2", {"waybill_no": None}, PNG_1PX, b"high", b"low"), 2.0)
    spool.put(record("live-1", "SF3"), 3.0)
    spool.mark_dead("dead-1", "gateway rejected scan: 409 conflict", 10.0)
    spool.mark_dead("dead-2", "gateway rejected scan: 422 invalid_image", 11.0)
    spool.close()
    return path


def states(path: Path) -> dict[str, str | None]:
    spool = Spool(path)
    try:
        return {i: spool.state_of(i) for i in ("dead-1", "dead-2", "live-1")}
    finally:
        spool.close()


def test_list_names_each_dead_scan_with_the_gateways_answer(
    spool_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--spool", str(spool_path), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["dead-1", "dead-2"]
    assert "409 conflict" in lines[0]
    assert "(no waybill)" in lines[1]


def test_export_then_discard_frees_the_spool_and_keeps_what_was_not_exported(
    spool_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    assert main(["--spool", str(spool_path), "export", str(out)]) == 0
    doc = json.loads((out / "dead-2.json").read_text())
    assert doc["gateway_answer"].endswith("422 invalid_image")
    assert doc["files"] == ["dead-2.png", "dead-2.high.png", "dead-2.low.png"]
    assert (out / "dead-2.low.png").read_bytes() == b"low"
    (out / "dead-2.high.png").write_bytes(b"edited")  # no longer the spool's bytes

    assert main(["--spool", str(spool_path), "discard", "--exported", str(out), "--all"]) == 1
    assert states(spool_path) == {"dead-1": None, "dead-2": "dead", "live-1": "pending"}


def test_discard_without_an_export_keeps_the_scan(spool_path: Path, tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    code = main(["--spool", str(spool_path), "discard", "--exported", str(empty), "dead-1"])
    assert code == 1
    assert states(spool_path)["dead-1"] == "dead"


def test_retry_makes_a_dead_scan_pending_and_leaves_the_others(spool_path: Path) -> None:
    assert main(["--spool", str(spool_path), "retry", "dead-2", "live-1"]) == 0
    assert states(spool_path) == {"dead-1": "dead", "dead-2": "pending", "live-1": "pending"}
    spool = Spool(spool_path)
    try:
        due = spool.next_due(0.0)  # due at once, before the older pending scan's retry time
        assert due is not None
        assert due.scan_id in ("dead-2", "live-1")
    finally:
        spool.close()


def test_retry_or_discard_needs_ids_or_all(spool_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--spool", str(spool_path), "retry"])
    assert main(["--spool", str(spool_path.with_suffix(".missing")), "list"]) == 2
