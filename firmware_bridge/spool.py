"""Durable, bounded store of scans waiting for the gateway (SQLite in WAL mode).

A scan enters once (its id is stable, so a replayed parcel is recognised) and leaves the pending
set only when the gateway answered 2xx (``sent``) or rejected it for good (``dead``: kept, alarmed,
never retried automatically). When the bound is reached ``put`` raises ``SpoolFullError``: the
caller stops the belt and alarms; nothing is dropped silently. Sent scans are kept as small
tombstones (no images) so that a replay long after the upload is still recognised.

Blocking calls: run them off the event loop (``asyncio.to_thread``); a lock serialises them.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpoolError, SpoolFullError

log = logging.getLogger("firmware_bridge.spool")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    scan_id         TEXT PRIMARY KEY,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
    created_at      REAL NOT NULL,           -- unix seconds
    metadata        TEXT NOT NULL,           -- JSON, the gateway's metadata part
    image           BLOB,                    -- PNG, 8-bit RGB pseudo-colour
    high            BLOB,                    -- PNG, 16-bit attenuation
    low             BLOB,
    size            INTEGER NOT NULL,        -- bytes of the three images
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0, -- unix seconds
    last_error      TEXT,
    done_at         REAL,
    result          TEXT                     -- the gateway's JSON answer
);
CREATE INDEX IF NOT EXISTS scans_due ON scans (state, next_attempt_at, created_at);
-- Covers the depth query (count and bytes per state): without it SQLite reads each row up to its
-- size column, which sits after the images, so every put read the whole backlog from disk
-- (0.8 s per put with 1,500 pending scans, under the spool's lock).
CREATE INDEX IF NOT EXISTS scans_size ON scans (state, size);
-- Small bridge state that must survive a restart (the hold book), as JSON by name.
CREATE TABLE IF NOT EXISTS state (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
"""
_INSERT = """
INSERT INTO scans (scan_id, state, created_at, metadata, image, high, low, size)
VALUES (?, 'pending', ?, ?, ?, ?, ?, ?)
ON CONFLICT (scan_id) DO NOTHING
"""
_DEPTH = """
SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM scans GROUP BY state
"""
# Due: its time has come, or its time is further off than any retry is ever put (the wall
# clock was set back after the retry was planned: waiting out the step would park the spool).
_NEXT_DUE = """
SELECT scan_id, metadata, image, high, low, attempts FROM scans
WHERE state = 'pending' AND (next_attempt_at <= ? OR next_attempt_at > ?)
ORDER BY created_at LIMIT 1
"""
_NEXT_TIME = "SELECT MIN(next_attempt_at) FROM scans WHERE state = 'pending'"
_SENT = """
UPDATE scans SET state = 'sent', image = NULL, high = NULL, low = NULL, size = 0,
    attempts = attempts + 1, done_at = ?, result = ?, last_error = NULL
WHERE scan_id = ?
"""
_RETRY = """
UPDATE scans SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?
WHERE scan_id = ? AND state = 'pending'
"""
_DEAD = """
UPDATE scans SET state = 'dead', attempts = attempts + 1, done_at = ?, last_error = ?
WHERE scan_id = ?
"""
_PRUNE = """
DELETE FROM scans WHERE scan_id IN (
    SELECT scan_id FROM scans WHERE state = 'sent' ORDER BY done_at DESC LIMIT -1 OFFSET ?
)
"""
_STATE_OF = "SELECT state FROM scans WHERE scan_id = ?"
_DEAD_RECORDS = """
SELECT scan_id, metadata, image, high, low, attempts, last_error, done_at FROM scans
WHERE state = 'dead' ORDER BY done_at, scan_id
"""
# An operator's decision on a dead scan (firmware_bridge.dead): send it again, its cause fixed,
# or let it go once it has been exported.
_REVIVE = """
UPDATE scans SET state = 'pending', next_attempt_at = 0, done_at = NULL
WHERE scan_id = ? AND state = 'dead'
"""
_DISCARD = "DELETE FROM scans WHERE scan_id = ? AND state = 'dead'"


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    scan_id: str
    metadata: dict[str, Any]
    image: bytes
    high: bytes | None = None
    low: bytes | None = None
    attempts: int = 0

    @property
    def size(self) -> int:
        return len(self.image) + len(self.high or b"") + len(self.low or b"")


@dataclass(frozen=True, slots=True)
class DeadScan:
    """A scan the gateway rejected for good, as the spool keeps it for an operator."""

    record: SpoolRecord
    error: str
    died_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class SpoolDepth:
    pending: int
    dead: int
    sent: int
    bytes: int  # images held (pending + dead)


class Spool:
    """The scan spool at ``path``; bounded by ``max_scans`` and ``max_bytes`` (pending + dead)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_scans: int = 20_000,
        max_bytes: int = 4 << 30,
        keep_sent: int = 50_000,
    ) -> None:
        self.path = Path(path)
        self.max_scans = max_scans
        self.max_bytes = max_bytes
        self.keep_sent = keep_sent
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a scan acknowledged by put() survives a power cut, not only a crash
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot open spool {self.path}: {exc}") from exc
        self._sent_since_prune = 0

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with SQLite errors translated to SpoolError."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise SpoolError(f"spool {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get_state(self, key: str) -> str | None:
        with self._locked() as db:
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_state(self, key: str, value: str) -> None:
        with self._locked() as db:
            db.execute(
                "INSERT INTO state (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def depth(self) -> SpoolDepth:
        with self._locked():
            rows = self._db.execute(_DEPTH).fetchall()
        by = {state: (int(n), int(size)) for state, n, size in rows}
        pending, dead, sent = (
            by.get("pending", (0, 0)),
            by.get("dead", (0, 0)),
            by.get("sent", (0, 0)),
        )
        return SpoolDepth(pending[0], dead[0], sent[0], pending[1] + dead[1])

    def is_full(self, extra_bytes: int = 0) -> bool:
        d = self.depth()
        return d.pending + d.dead >= self.max_scans or d.bytes + extra_bytes > self.max_bytes

    def put(self, record: SpoolRecord, now: float, *, beyond_bound: bool = False) -> bool:
        """Store a new scan durably. False when the id is already known (a replay).

        Raises SpoolFullError at the bound; the scan is then NOT stored and the caller keeps it.
        ``beyond_bound``: store it all the same (a bridge shutting down with closed parcels in
        hand: the scanner will not send them again, so the disk is the only place left).
        """
        with self._lock:
            try:
                if self._db.execute(_STATE_OF, (record.scan_id,)).fetchone() is not None:
                    return False
                rows = self._db.execute(_DEPTH).fetchall()
                held = sum(n for state, n, _ in rows if state != "sent")
                held_bytes = sum(size for state, _, size in rows if state != "sent")
                over = held >= self.max_scans or held_bytes + record.size > self.max_bytes
                if over and not beyond_bound:
                    raise SpoolFullError(
                        f"spool full: {held} scans, {held_bytes} bytes "
                        f"(bounds {self.max_scans}, {self.max_bytes})"
                    )
                cur = self._db.execute(
                    _INSERT,
                    (
                        record.scan_id,
                        now,
                        json.dumps(record.metadata, separators=(",", ":")),
                        record.image,
                        record.high,
                        record.low,
                        record.size,
                    ),
                )
            except sqlite3.Error as exc:
                raise SpoolError(f"spool write failed: {exc}") from exc
            return cur.rowcount == 1

    def next_due(self, now: float, latest: float = math.inf) -> SpoolRecord | None:
        """The oldest pending scan due at ``now``; one planned for after ``latest`` (later than
        any retry is ever put: the clock went back) counts as due too."""
        with self._locked():
            row = self._db.execute(_NEXT_DUE, (now, latest)).fetchone()
        if row is None:
            return None
        scan_id, metadata, image, high, low, attempts = row
        return SpoolRecord(scan_id, json.loads(metadata), image, high, low, attempts)

    def next_due_at(self) -> float | None:
        with self._locked():
            (value,) = self._db.execute(_NEXT_TIME).fetchone()
        return None if value is None else float(value)

    def mark_sent(self, scan_id: str, result: dict[str, Any], now: float) -> None:
        with self._locked():
            self._db.execute(_SENT, (now, json.dumps(result), scan_id))
            self._sent_since_prune += 1
            if self._sent_since_prune >= 500:
                self._sent_since_prune = 0
                self._db.execute(_PRUNE, (self.keep_sent,))

    def mark_retry(self, scan_id: str, error: str, next_attempt_at: float) -> None:
        with self._locked():
            self._db.execute(_RETRY, (next_attempt_at, error, scan_id))

    def mark_dead(self, scan_id: str, error: str, now: float) -> None:
        log.critical("scan %s is dead in the spool (needs an operator): %s", scan_id, error)
        with self._locked():
            self._db.execute(_DEAD, (now, error, scan_id))

    def dead_scans(self) -> list[DeadScan]:
        """Every dead scan with its images, oldest first."""
        with self._locked() as db:
            rows = db.execute(_DEAD_RECORDS).fetchall()
        return [
            DeadScan(
                SpoolRecord(scan_id, json.loads(meta), image, high, low, attempts),
                str(error or ""),
                float(done_at or 0.0),
            )
            for scan_id, meta, image, high, low, attempts, error, done_at in rows
        ]

    def revive(self, scan_ids: list[str]) -> list[str]:
        """Make these dead scans pending again, due now; the ids that were dead."""
        return self._each_dead(_REVIVE, scan_ids)

    def discard(self, scan_ids: list[str]) -> list[str]:
        """Delete these dead scans (images and row); the ids that were dead. The row goes with
        them: a scanner replaying that very parcel later would be spooled as new."""
        return self._each_dead(_DISCARD, scan_ids)

    def _each_dead(self, statement: str, scan_ids: list[str]) -> list[str]:
        done = []
        with self._locked() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                for scan_id in scan_ids:
                    if db.execute(statement, (scan_id,)).rowcount == 1:
                        done.append(scan_id)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return done

    def state_of(self, scan_id: str) -> str | None:
        with self._locked():
            row = self._db.execute(_STATE_OF, (scan_id,)).fetchone()
        return None if row is None else str(row[0])
