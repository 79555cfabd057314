"""Durable spool: survives reopen, recognises replays, refuses loudly when full."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware_bridge.errors import SpoolFullError
from firmware_bridge.spool import _DEPTH, Spool, SpoolRecord


def record(n: int, size: int = 100) -> SpoolRecord:
    return SpoolRecord(f"scan-{n}", {"scan_id": f"scan-{n}"}, b"i" * size, b"h", b"l")


def test_pending_scans_survive_a_restart_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    for n in range(3):
        assert spool.put(record(n), now=float(n))
    spool.close()
    spool = Spool(tmp_path / "s.db")
    assert spool.depth().pending == 3
    first = spool.next_due(now=10.0)
    assert first is not None
    assert first.scan_id == "scan-0"
    assert first.metadata == {"scan_id": "scan-0"}
    spool.mark_sent("scan-0", {"result": "accepted"}, now=11.0)
    assert spool.depth().pending == 2
    assert spool.state_of("scan-0") == "sent"


def test_a_replayed_scan_is_recognised_even_after_upload(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    assert spool.put(record(1), 0.0)
    assert not spool.put(record(1), 1.0)
    spool.mark_sent("scan-1", {}, 2.0)
    assert not spool.put(record(1), 3.0)
    assert spool.depth().pending == 0


def test_full_spool_raises_and_keeps_everything(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_scans=2)
    spool.put(record(1), 0.0)
    spool.put(record(2), 0.0)
    with pytest.raises(SpoolFullError):
        spool.put(record(3), 0.0)
    assert spool.depth().pending == 2
    spool.mark_sent("scan-1", {}, 1.0)
    assert spool.put(record(3), 2.0)


def test_a_stopping_bridge_may_store_past_the_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_scans=1, max_bytes=150)
    spool.put(record(1), 0.0)
    with pytest.raises(SpoolFullError):
        spool.put(record(2), 0.0)
    assert spool.put(record(2), 0.0, beyond_bound=True)
    assert spool.depth().pending == 2


def test_the_depth_is_counted_without_reading_the_images(tmp_path: Path) -> None:
    """Every put checks the bound: the count and bytes come from an index, not from walking
    each pending scan's images (which sit before the size column in a row)."""
    spool = Spool(tmp_path / "s.db")
    plan = spool._db.execute("EXPLAIN QUERY PLAN " + _DEPTH).fetchall()
    assert "COVERING INDEX scans_size" in str(plan)


def test_a_due_time_past_any_backoff_is_due_now(tmp_path: Path) -> None:
    """Planned before the wall clock was set back by hours: not waited out."""
    spool = Spool(tmp_path / "s.db")
    spool.put(record(1), 0.0)
    spool.mark_retry("scan-1", "503", next_attempt_at=1000.0 + 6 * 3600)
    assert spool.next_due(now=1000.0, latest=1000.0 + 300) is not None
    spool.mark_retry("scan-1", "503", next_attempt_at=1000.0 + 200)
    assert spool.next_due(now=1000.0, latest=1000.0 + 300) is None


def test_byte_bound(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", max_bytes=150)
    spool.put(record(1), 0.0)
    with pytest.raises(SpoolFullError):
        spool.put(record(2), 0.0)


def test_retry_schedule_and_dead_letters(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    spool.put(record(1), 0.0)
    spool.mark_retry("scan-1", "503", next_attempt_at=100.0)
    assert spool.next_due(now=50.0) is None
    assert spool.next_due_at() == 100.0
    due = spool.next_due(now=100.0)
    assert due is not None
    assert due.attempts == 1
    spool.mark_dead("scan-1", "409 conflict", now=101.0)
    assert spool.next_due(now=1e9) is None
    assert spool.depth().dead == 1
    assert [(d.record.scan_id, d.error) for d in spool.dead_scans()] == [("scan-1", "409 conflict")]


def test_wal_mode(tmp_path: Path) -> None:
    import sqlite3

    Spool(tmp_path / "s.db").close()
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
