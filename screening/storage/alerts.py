"""SQL for police alerts, their outbox of webhook deliveries, endpoints, actions, the alert policy,
the watchlist, hold orders and the audit of personal-data reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from screening.storage import Conn

# NOTIFY channels: payloads are hints only; listeners re-read the tables.
ALERTS_CHANNEL = "screening_alerts"
OUTBOX_CHANNEL = "screening_outbox"
HOLDS_CHANNEL = "screening_holds"

NOTIFY = "SELECT pg_notify($1, $2)"

# -- policy --------------------------------------------------------------------------------------

SELECT_POLICY = "SELECT version, rules FROM alert_policies ORDER BY version DESC LIMIT 1"
INSERT_POLICY = """
INSERT INTO alert_policies (version, rules, created_by, created_at)
SELECT coalesce(max(version), 0) + 1, $1::jsonb, $2, $3 FROM alert_policies
RETURNING version
"""
LOCK_POLICY = "LOCK TABLE alert_policies IN SHARE ROW EXCLUSIVE MODE"

# -- watchlist -----------------------------------------------------------------------------------

# Both write the change into watchlist_changes in the same statement (the audit trail).
# Adding an entry that is already listed relabels it and makes the adder its owner, when the
# adder may act on every site ($5) or already owns it; a site-scoped key leaves another key's
# entry as it is (it stays listed).
UPSERT_WATCHLIST = """
WITH saved AS (
    INSERT INTO watchlist (document_hmac, label, added_by, added_at)
    SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::timestamptz[])
    ON CONFLICT (document_hmac) DO UPDATE
        SET label = EXCLUDED.label, added_by = EXCLUDED.added_by, added_at = EXCLUDED.added_at
        WHERE $5::boolean OR watchlist.added_by = EXCLUDED.added_by
    RETURNING document_hmac, label
)
INSERT INTO watchlist_changes (document_hmac, change, label, actor, at)
SELECT document_hmac, 'added', label, $3[1], $4[1] FROM saved
"""
# Returns who had added each removed entry: the caller checks that, in the same transaction,
# on the rows the delete itself locked and removed.
DELETE_WATCHLIST = """
WITH gone AS (
    DELETE FROM watchlist WHERE document_hmac = ANY($1::bytea[])
    RETURNING document_hmac, label, added_by
), logged AS (
    INSERT INTO watchlist_changes (document_hmac, change, label, actor, at)
    SELECT document_hmac, 'removed', label, $2, $3 FROM gone
)
SELECT document_hmac, added_by FROM gone
"""
MATCH_WATCHLIST = (
    "SELECT document_hmac, label FROM watchlist WHERE document_hmac = ANY($1::bytea[])"
)
COUNT_WATCHLIST = "SELECT count(*) FROM watchlist"

# -- alerts --------------------------------------------------------------------------------------

INSERT_ALERT = """
INSERT INTO alerts (site_id, alert_id, dedupe_key, cause, category, score, waybill_no, scan_id,
                    source_event_id, policy_version, occurred_at, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (site_id, dedupe_key) DO NOTHING
RETURNING alert_id
"""
# A review confirmation: a new alert (revision 1), or the annotation of the alert this scan
# already raised (revision + 1, moved to the live feed's end: a new seq and this txid). An alert
# confirmed once is left as it is (no row returned): a retried or concurrent confirmation finds
# the row locked, waits, and then sees it confirmed.
CONFIRM_ALERT = """
INSERT INTO alerts (site_id, alert_id, dedupe_key, cause, category, score, waybill_no, scan_id,
                    source_event_id, policy_version, occurred_at, created_at, confirmed_by,
                    confirmed_at, confirmed_item_id, confirmed_category)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (site_id, dedupe_key) DO UPDATE
SET confirmed_by = EXCLUDED.confirmed_by, confirmed_at = EXCLUDED.confirmed_at,
    confirmed_item_id = EXCLUDED.confirmed_item_id,
    confirmed_category = EXCLUDED.confirmed_category,
    revision = alerts.revision + 1,
    seq = nextval(pg_get_serial_sequence('alerts', 'seq')),
    txid = (pg_current_xact_id()::text)::bigint
WHERE alerts.confirmed_at IS NULL
RETURNING alert_id, revision, status
"""
SELECT_ALERT_BY_KEY = (
    "SELECT alert_id, status FROM alerts WHERE site_id = $1 AND dedupe_key = $2"
)
# The outbox rows, in the same transaction as the alert or its update: one per enabled endpoint
# in scope, per message ('created', 'confirmed').
# Every endpoint of the site gets the delivery, a disabled one too: its deliveries wait (the
# relay claims only enabled endpoints' rows) and go out once an admin enables it again.
INSERT_DELIVERIES = """
INSERT INTO alert_deliveries (site_id, alert_id, message, endpoint_id, next_attempt_at)
SELECT $1, $2, $3, e.endpoint_id, $4 FROM webhook_endpoints e
WHERE cardinality(e.site_ids) = 0 OR $1 = ANY(e.site_ids)
ON CONFLICT DO NOTHING
"""
SELECT_ALERT = """
SELECT a.site_id, a.alert_id, a.seq, a.txid, a.cause, a.category, a.score, a.waybill_no, a.scan_id,
a.source_event_id, a.policy_version, a.occurred_at, a.created_at, a.status, a.assignee,
a.disposition, a.closed_at, a.revision, a.confirmed_by, a.confirmed_at, a.confirmed_item_id,
a.confirmed_category FROM alerts a
WHERE a.alert_id = $1 AND ($2::text[] IS NULL OR a.site_id = ANY($2::text[]))
"""
SELECT_ALERT_FOR_UPDATE = SELECT_ALERT + " FOR UPDATE"
LIST_ALERTS = """
SELECT a.site_id, a.alert_id, a.seq, a.txid, a.cause, a.category, a.score, a.waybill_no, a.scan_id,
a.source_event_id, a.policy_version, a.occurred_at, a.created_at, a.status, a.assignee,
a.disposition, a.closed_at, a.revision, a.confirmed_by, a.confirmed_at, a.confirmed_item_id,
a.confirmed_category FROM alerts a
WHERE ($1::text[] IS NULL OR a.site_id = ANY($1::text[]))
  AND ($2::text IS NULL OR a.status = $2)
ORDER BY a.created_at DESC, a.alert_id
LIMIT $3
"""
# The live feed: only alerts below the oldest running transaction, in (txid, seq) order, so an
# alert committing late can never fall behind a cursor that has already moved past it.
FEED_AFTER = """
SELECT a.site_id, a.alert_id, a.seq, a.txid, a.cause, a.category, a.score, a.waybill_no, a.scan_id,
a.source_event_id, a.policy_version, a.occurred_at, a.created_at, a.status, a.assignee,
a.disposition, a.closed_at, a.revision, a.confirmed_by, a.confirmed_at, a.confirmed_item_id,
a.confirmed_category FROM alerts a
WHERE (a.txid, a.seq) > ($1::bigint, $2::bigint)
  AND a.txid < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint
  AND ($3::text[] IS NULL OR a.site_id = ANY($3::text[]))
ORDER BY a.txid, a.seq
LIMIT $4
"""
FEED_HORIZON = "SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint"
# A police action (acknowledge, assign, close) is a new revision at the live feed's end, as a
# review confirmation is: open consoles and feed consumers see the alert's new state.
UPDATE_ALERT_STATE = """
UPDATE alerts SET status = $3, assignee = coalesce($4, assignee), disposition = $5, closed_at = $6,
    revision = revision + 1,
    seq = nextval(pg_get_serial_sequence('alerts', 'seq')),
    txid = (pg_current_xact_id()::text)::bigint
WHERE site_id = $1 AND alert_id = $2
"""
INSERT_ACTION = """
INSERT INTO alert_actions (site_id, alert_id, action_id, action, actor, at, detail)
VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
"""
SELECT_ACTIONS = """
SELECT action, actor, at, detail FROM alert_actions WHERE site_id = $1 AND alert_id = $2
ORDER BY at, action_id
"""

# -- endpoints and deliveries --------------------------------------------------------------------

INSERT_ENDPOINT = """
INSERT INTO webhook_endpoints (endpoint_id, url, secret, site_ids, enabled, created_at)
VALUES ($1, $2, $3, $4, true, $5)
"""
LIST_ENDPOINTS = """
SELECT endpoint_id, url, site_ids, enabled, disabled_reason, created_at, secret_rotated_at,
       CASE WHEN previous_secret_until > $1::timestamptz THEN previous_secret_until END
           AS previous_secret_until
FROM webhook_endpoints
ORDER BY created_at, endpoint_id
"""
# The new secret, and the one it replaces kept until $3 (none when $3 is not after $4, the time
# of the rotation: the old secret stops at once). A rotation inside the window of an earlier one
# drops that earlier secret: only the latest two are ever signed with.
ROTATE_ENDPOINT_SECRET = """
UPDATE webhook_endpoints
SET previous_secret = CASE WHEN $3::timestamptz > $4::timestamptz THEN secret END,
    previous_secret_until = CASE WHEN $3::timestamptz > $4::timestamptz THEN $3::timestamptz END,
    secret = $2,
    secret_rotated_at = $4
WHERE endpoint_id = $1
RETURNING endpoint_id
"""
SET_ENDPOINT_ENABLED = """
UPDATE webhook_endpoints SET enabled = $2, disabled_reason = $3 WHERE endpoint_id = $1
RETURNING endpoint_id
"""
# Claim due deliveries under a lease. SKIP LOCKED: concurrent relays take disjoint rows; the lease
# keeps a row claimed after this transaction ends, until the relay records the outcome or dies.
CLAIM_DELIVERIES = """
WITH due AS (
    SELECT d.site_id, d.alert_id, d.message, d.endpoint_id
    FROM alert_deliveries d
    JOIN webhook_endpoints e ON e.endpoint_id = d.endpoint_id AND e.enabled
    WHERE d.status = 'pending' AND d.next_attempt_at <= $1
      AND (d.locked_until IS NULL OR d.locked_until <= $1)
    ORDER BY d.next_attempt_at
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE alert_deliveries d
SET locked_until = $3, locked_by = $4, attempts = d.attempts + 1
FROM due
WHERE d.site_id = due.site_id AND d.alert_id = due.alert_id AND d.message = due.message
  AND d.endpoint_id = due.endpoint_id
RETURNING d.site_id, d.alert_id, d.message, d.endpoint_id, d.attempts
"""
SELECT_CLAIMED = """
SELECT a.site_id, a.alert_id, a.seq, a.txid, a.cause, a.category, a.score, a.waybill_no, a.scan_id,
a.source_event_id, a.policy_version, a.occurred_at, a.created_at, a.status, a.assignee,
a.disposition, a.closed_at, a.revision, a.confirmed_by, a.confirmed_at, a.confirmed_item_id,
a.confirmed_category, k.message, k.endpoint_id, k.attempts, e.url, e.secret, e.previous_secret,
e.previous_secret_until
FROM unnest($1::text[], $2::uuid[], $3::text[], $4::uuid[], $5::int[])
     AS k(site_id, alert_id, message, endpoint_id, attempts)
JOIN alerts a ON a.site_id = k.site_id AND a.alert_id = k.alert_id
JOIN webhook_endpoints e ON e.endpoint_id = k.endpoint_id
"""
# Outcomes are recorded only by the lease holder of that very attempt.
MARK_DELIVERED = """
UPDATE alert_deliveries
SET status = 'delivered', delivered_at = $5, locked_until = NULL, last_status = $6,
    last_error = NULL
WHERE site_id = $1 AND alert_id = $2 AND endpoint_id = $3 AND locked_by = $4 AND message = $7
"""
MARK_RETRY = """
UPDATE alert_deliveries
SET next_attempt_at = $5, locked_until = NULL, last_status = $6, last_error = $7
WHERE site_id = $1 AND alert_id = $2 AND endpoint_id = $3 AND locked_by = $4 AND message = $8
  AND status = 'pending'
"""
MARK_DEAD = """
UPDATE alert_deliveries
SET status = 'dead', locked_until = NULL, last_status = $5, last_error = $6
WHERE site_id = $1 AND alert_id = $2 AND endpoint_id = $3 AND locked_by = $4 AND message = $7
"""
LIST_DEAD = """
SELECT d.site_id, d.alert_id, d.message, d.endpoint_id, d.attempts, d.last_status,
       d.last_error, d.next_attempt_at
FROM alert_deliveries d
WHERE d.status = 'dead' AND ($1::text[] IS NULL OR d.site_id = ANY($1::text[]))
ORDER BY d.site_id, d.alert_id, d.message
LIMIT $2
"""
REPLAY_DEAD = """
UPDATE alert_deliveries
SET status = 'pending', attempts = 0, next_attempt_at = $3, locked_until = NULL,
    locked_by = NULL
WHERE status = 'dead' AND ($1::uuid[] IS NULL OR alert_id = ANY($1::uuid[]))
  AND ($2::uuid IS NULL OR endpoint_id = $2)
RETURNING site_id, alert_id, message, endpoint_id
"""
DELIVERY_COUNTS = "SELECT status, count(*) AS n FROM alert_deliveries GROUP BY status"

# -- holds ---------------------------------------------------------------------------------------

INSERT_HOLD = """
INSERT INTO holds (site_id, hold_id, waybill_no, reason, scan_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (site_id, waybill_no) WHERE status = 'open' DO NOTHING
RETURNING hold_id
"""
# What the stations must still hear: open holds not acknowledged, and closed holds whose
# release is not acknowledged.
UNACKED_HOLDS = """
SELECT site_id, hold_id, waybill_no, reason, scan_id, created_at, acked_at, status, closed_at,
       closed_by, release_id, release_acked_at
FROM holds
WHERE site_id = ANY($1::text[])
  AND ((status = 'open' AND acked_at IS NULL)
       -- A release matters only where a station may have acted on the hold (it was pushed to
       -- one), and is pushed for a day at most: a station that never acknowledges releases (an
       -- older bridge) is not sent them for ever.
       OR (status <> 'open' AND pushed_at IS NOT NULL AND release_acked_at IS NULL
           AND closed_at > now() - interval '1 day'))
ORDER BY site_id, created_at
"""
# A station's ack names the order it acknowledges: a hold by its hold_id, a release by its
# release_id.
# An acknowledged hold reached a station, whatever the pusher managed to record: its release
# must be pushed too (UNACKED_HOLDS sends releases only of holds with pushed_at set).
ACK_HOLD = """
UPDATE holds
SET acked_at = CASE WHEN hold_id = $2 THEN coalesce(acked_at, $3) ELSE acked_at END,
    pushed_at = CASE WHEN hold_id = $2 THEN coalesce(pushed_at, $3) ELSE pushed_at END,
    release_acked_at = CASE WHEN release_id = $2 THEN coalesce(release_acked_at, $3)
                            ELSE release_acked_at END
WHERE site_id = ANY($1::text[]) AND (hold_id = $2 OR release_id = $2)
RETURNING site_id
"""
CLOSE_HOLD = """
UPDATE holds SET status = $3, closed_at = $4, closed_by = $5, release_id = gen_random_uuid()
WHERE site_id = $1 AND hold_id = $2 AND status = 'open'
RETURNING site_id, hold_id, waybill_no, reason, scan_id, created_at, acked_at, status, closed_at,
          closed_by, release_id, release_acked_at
"""
CLOSE_HOLD_OF_PARCEL = """
UPDATE holds SET status = $3, closed_at = $4, closed_by = $5, release_id = gen_random_uuid()
WHERE site_id = $1 AND waybill_no = $2 AND status = 'open'
RETURNING site_id, hold_id, waybill_no, reason, scan_id, created_at, acked_at, status, closed_at,
          closed_by, release_id, release_acked_at
"""
SELECT_HOLD = """
SELECT site_id, hold_id, waybill_no, reason, scan_id, created_at, acked_at, status, closed_at,
       closed_by, release_id, release_acked_at
FROM holds
WHERE hold_id = $1 AND ($2::text[] IS NULL OR site_id = ANY($2::text[]))
"""
LIST_HOLDS = """
SELECT site_id, hold_id, waybill_no, reason, scan_id, created_at, acked_at, status, closed_at,
       closed_by, release_id, release_acked_at
FROM holds
WHERE ($1::text[] IS NULL OR site_id = ANY($1::text[])) AND ($2::text IS NULL OR status = $2)
ORDER BY created_at DESC
LIMIT $3
"""
OPEN_HOLDS_OF_PARCELS = """
SELECT h.site_id, h.hold_id, h.waybill_no, h.reason, h.scan_id, h.created_at, h.acked_at, h.status,
       h.closed_at, h.closed_by, h.release_id, h.release_acked_at
FROM holds h
JOIN unnest($1::text[], $2::text[]) AS k(site_id, waybill_no)
  ON h.site_id = k.site_id AND h.waybill_no = k.waybill_no
WHERE h.status = 'open'
"""

# -- personal data -------------------------------------------------------------------------------

SELECT_SENDER = """
SELECT event_id, pii_key_id, document_type, document_masked, document_sealed, name_masked,
       name_sealed, phone_masked, phone_sealed, contract_customer_ref
FROM realname_records
WHERE site_id = $1 AND ($2::uuid IS NULL OR event_id = $2) AND ($3::text IS NULL OR waybill_no = $3)
ORDER BY occurred_at DESC, event_id
LIMIT 1
"""
INSERT_PII_READ = """
INSERT INTO personal_data_reads (site_id, read_id, alert_id, record_event_id, reader, purpose,
                                 read_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""
LIST_PII_READS = """
SELECT site_id, read_id, alert_id, record_event_id, reader, purpose, read_at
FROM personal_data_reads WHERE site_id = $1 AND alert_id = $2 ORDER BY read_at
"""


@dataclass(frozen=True, slots=True)
class Alert:
    site_id: str
    alert_id: UUID
    seq: int
    txid: int
    cause: str
    category: str
    score: float | None
    waybill_no: str | None
    scan_id: UUID | None
    source_event_id: UUID | None
    policy_version: int
    occurred_at: datetime
    created_at: datetime
    status: str
    assignee: str | None
    disposition: str | None
    closed_at: datetime | None
    revision: int = 1  # 1 as raised; +1 per update: a review confirmation, a police action
    confirmed_by: str | None = None  # the reviewer (API key id) whose confirmation it carries
    confirmed_at: datetime | None = None
    confirmed_item_id: UUID | None = None
    confirmed_category: str | None = None

    @property
    def cursor(self) -> str:
        """The live feed's event id: resumes after this alert."""
        return f"{self.txid}-{self.seq}"


@dataclass(frozen=True, slots=True)
class NewAlert:
    site_id: str
    alert_id: UUID
    dedupe_key: str
    cause: str  # scan_score, review_confirmed, inspection_prohibited, watchlist, ...
    category: str
    score: float | None
    waybill_no: str | None
    scan_id: UUID | None
    source_event_id: UUID | None
    policy_version: int
    occurred_at: datetime


def _alert_row(a: NewAlert) -> tuple[Any, ...]:
    """The alert's columns in the order INSERT_ALERT and CONFIRM_ALERT take them ($1-$11)."""
    return tuple(getattr(a, f.name) for f in fields(a))


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A reviewer's confirmation of the scan an alert is about."""

    reviewer: str  # API key id
    at: datetime
    item_id: UUID
    category: str | None
    level: int


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    alert: Alert
    message: str  # created, confirmed
    endpoint_id: UUID
    attempts: int
    url: str
    secret: str
    previous_secret: str | None = None  # the secret before a rotation, signed with until:
    previous_until: datetime | None = None

    def secrets(self, now: datetime) -> tuple[str, ...]:
        """What to sign an attempt made at ``now`` with: the current secret, then the previous
        one while its rotation window is open."""
        if self.previous_secret and self.previous_until is not None and now < self.previous_until:
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True, slots=True)
class Hold:
    site_id: str
    hold_id: UUID
    waybill_no: str
    reason: str
    scan_id: UUID | None
    created_at: datetime
    acked_at: datetime | None
    status: str
    closed_at: datetime | None
    closed_by: str | None
    release_id: UUID | None = None  # the release order's id, once the hold is closed
    release_acked_at: datetime | None = None

    @property
    def order_id(self) -> UUID:
        """The id of what stations must hear about this hold now: the hold, or its release."""
        return self.release_id if self.status != "open" and self.release_id else self.hold_id


_ALERT_FIELDS = tuple(Alert.__dataclass_fields__)
_HOLD_FIELDS = tuple(Hold.__dataclass_fields__)


def _alert(r: asyncpg.Record) -> Alert:
    return Alert(**{k: r[k] for k in _ALERT_FIELDS})


def _hold(r: asyncpg.Record) -> Hold:
    return Hold(**{k: r[k] for k in _HOLD_FIELDS})


async def notify(conn: Conn, channel: str, payload: str = "") -> None:
    """Queue a NOTIFY; PostgreSQL delivers it only if and when the transaction commits."""
    await conn.execute(NOTIFY, channel, payload)


async def load_policy(conn: Conn) -> tuple[int, dict[str, Any]] | None:
    row = await conn.fetchrow(SELECT_POLICY)
    return None if row is None else (int(row["version"]), json.loads(row["rules"]))


async def insert_policy(conn: Conn, rules: dict[str, Any], actor: str, now: datetime) -> int:
    await conn.execute(LOCK_POLICY)  # versions are dense; two writers must not pick the same
    return int(await conn.fetchval(INSERT_POLICY, json.dumps(rules), actor, now))


async def add_watchlist(
    conn: Conn,
    entries: Sequence[tuple[bytes, str]],
    actor: str,
    now: datetime,
    *,
    takes_over: bool,
) -> None:
    """List these entries; ``takes_over``: the actor may relabel (and own) entries that another
    key added (a key without a site scope)."""
    await conn.execute(
        UPSERT_WATCHLIST,
        [e[0] for e in entries],
        [e[1] for e in entries],
        [actor] * len(entries),
        [now] * len(entries),
        takes_over,
    )


async def remove_watchlist(
    conn: Conn, digests: Sequence[bytes], actor: str, now: datetime
) -> dict[bytes, str]:
    """Remove the entries (and log the removals); who had added each one that was removed."""
    rows = await conn.fetch(DELETE_WATCHLIST, list(digests), actor, now)
    return {bytes(r["document_hmac"]): r["added_by"] for r in rows}


async def match_watchlist(conn: Conn, digests: Sequence[bytes]) -> dict[bytes, str]:
    rows = await conn.fetch(MATCH_WATCHLIST, list(digests))
    return {bytes(r["document_hmac"]): r["label"] for r in rows}


async def watchlist_size(conn: Conn) -> int:
    return int(await conn.fetchval(COUNT_WATCHLIST))


async def insert_alert(conn: Conn, a: NewAlert, now: datetime) -> bool:
    """Write the alert and its outbox rows, and wake the relays and feeds at commit. False when
    this cause already raised its alert (idempotent)."""
    got = await conn.fetchval(
        INSERT_ALERT,
        *_alert_row(a),
        now,
    )
    if got is None:
        return False
    await _announce(conn, a.site_id, a.alert_id, "created", now)
    return True


async def _announce(conn: Conn, site_id: str, alert_id: UUID, message: str, now: datetime) -> None:
    """Queue ``message`` about the alert for every police endpoint, and wake the relays and the
    live feeds at commit."""
    await conn.execute(INSERT_DELIVERIES, site_id, alert_id, message, now)
    await notify(conn, OUTBOX_CHANNEL, site_id)
    await notify(conn, ALERTS_CHANNEL, site_id)


@dataclass(frozen=True, slots=True)
class Confirmed:
    """What ``confirm_alert`` did: ``outcome`` is 'created', 'confirmed' (an existing alert
    annotated, police sent the update) or 'unchanged' (confirmed already); ``closed`` when
    police had already closed the alert, whose disposition then stands."""

    alert_id: UUID
    outcome: str
    closed: bool


async def confirm_alert(conn: Conn, a: NewAlert, c: Confirmation, now: datetime) -> Confirmed:
    """One alert per cause (``a.dedupe_key``), confirmed by review: raise it with the
    confirmation ('created'), or annotate the alert this cause already raised and send police
    the update ('confirmed'), or nothing when it is confirmed already ('unchanged')."""
    row = await conn.fetchrow(
        CONFIRM_ALERT,
        *_alert_row(a),
        now,
        c.reviewer,
        c.at,
        c.item_id,
        c.category,
    )
    if row is None:
        found = await conn.fetchrow(SELECT_ALERT_BY_KEY, a.site_id, a.dedupe_key)
        assert found is not None  # the conflicting row: alerts are never deleted
        return Confirmed(found["alert_id"], "unchanged", found["status"] == "closed")
    alert_id = row["alert_id"]
    outcome = "created" if row["revision"] == 1 else "confirmed"
    if outcome == "confirmed":
        detail = {"item_id": str(c.item_id), "category": c.category, "level": c.level}
        await conn.execute(
            INSERT_ACTION,
            a.site_id,
            alert_id,
            uuid4(),
            "review_confirmed",
            c.reviewer,
            c.at,
            json.dumps(detail),
        )
    await _announce(conn, a.site_id, alert_id, outcome, now)
    return Confirmed(alert_id, outcome, row["status"] == "closed")


async def get_alert(
    conn: Conn, alert_id: UUID, sites: list[str] | None, *, for_update: bool = False
) -> Alert | None:
    row = await conn.fetchrow(
        SELECT_ALERT_FOR_UPDATE if for_update else SELECT_ALERT, alert_id, sites
    )
    return None if row is None else _alert(row)


async def list_alerts(
    conn: Conn, sites: list[str] | None, status: str | None, limit: int
) -> list[Alert]:
    return [_alert(r) for r in await conn.fetch(LIST_ALERTS, sites, status, limit)]


async def feed_after(
    conn: Conn, cursor: tuple[int, int], sites: list[str] | None, limit: int
) -> list[Alert]:
    rows = await conn.fetch(FEED_AFTER, cursor[0], cursor[1], sites, limit)
    return [_alert(r) for r in rows]


async def feed_horizon(conn: Conn) -> tuple[int, int]:
    """A cursor just before everything not yet visible: a fresh feed starts here."""
    return (int(await conn.fetchval(FEED_HORIZON)), -1)


async def update_alert_state(
    conn: Conn,
    alert: Alert,
    status: str,
    assignee: str | None,
    disposition: str | None,
    closed_at: datetime | None,
) -> None:
    await conn.execute(
        UPDATE_ALERT_STATE, alert.site_id, alert.alert_id, status, assignee, disposition, closed_at
    )
    await notify(conn, ALERTS_CHANNEL, alert.site_id)  # wake the live feeds at commit


async def insert_action(
    conn: Conn,
    alert: Alert,
    action_id: UUID,
    action: str,
    actor: str,
    at: datetime,
    detail: dict[str, Any],
) -> None:
    await conn.execute(
        INSERT_ACTION,
        alert.site_id,
        alert.alert_id,
        action_id,
        action,
        actor,
        at,
        json.dumps(detail),
    )


async def list_actions(conn: Conn, alert: Alert) -> list[dict[str, Any]]:
    rows = await conn.fetch(SELECT_ACTIONS, alert.site_id, alert.alert_id)
    return [
        {
            "action": r["action"],
            "actor": r["actor"],
            "at": r["at"],
            "detail": json.loads(r["detail"]),
        }
        for r in rows
    ]


async def insert_endpoint(
    conn: Conn, endpoint_id: UUID, url: str, secret: str, sites: list[str], now: datetime
) -> None:
    await conn.execute(INSERT_ENDPOINT, endpoint_id, url, secret, sites, now)


async def list_endpoints(conn: Conn, now: datetime) -> list[dict[str, Any]]:
    """Every endpoint, never its secrets: ``previous_secret_until`` is set while a rotation's
    window is open at ``now``."""
    return [dict(r) for r in await conn.fetch(LIST_ENDPOINTS, now)]


async def rotate_endpoint_secret(
    conn: Conn, endpoint_id: UUID, secret: str, previous_until: datetime, now: datetime
) -> bool:
    """Whether the endpoint exists (and now signs with ``secret``)."""
    found = await conn.fetchval(ROTATE_ENDPOINT_SECRET, endpoint_id, secret, previous_until, now)
    return found is not None


async def set_endpoint_enabled(
    conn: Conn, endpoint_id: UUID, enabled: bool, reason: str | None
) -> bool:
    return await conn.fetchval(SET_ENDPOINT_ENABLED, endpoint_id, enabled, reason) is not None


async def claim_deliveries(
    conn: Conn, now: datetime, limit: int, lease_until: datetime, owner: str
) -> list[ClaimedDelivery]:
    async with conn.transaction():
        claimed = await conn.fetch(CLAIM_DELIVERIES, now, limit, lease_until, owner)
    if not claimed:
        return []
    rows = await conn.fetch(
        SELECT_CLAIMED,
        [r["site_id"] for r in claimed],
        [r["alert_id"] for r in claimed],
        [r["message"] for r in claimed],
        [r["endpoint_id"] for r in claimed],
        [r["attempts"] for r in claimed],
    )
    return [
        ClaimedDelivery(
            _alert(r),
            r["message"],
            r["endpoint_id"],
            r["attempts"],
            r["url"],
            r["secret"],
            r["previous_secret"],
            r["previous_secret_until"],
        )
        for r in rows
    ]


async def mark_delivered(
    conn: Conn, d: ClaimedDelivery, owner: str, now: datetime, status: int
) -> None:
    await conn.execute(
        MARK_DELIVERED,
        d.alert.site_id,
        d.alert.alert_id,
        d.endpoint_id,
        owner,
        now,
        status,
        d.message,
    )


async def mark_retry(
    conn: Conn,
    d: ClaimedDelivery,
    owner: str,
    next_at: datetime,
    status: int | None,
    error: str,
) -> None:
    await conn.execute(
        MARK_RETRY,
        d.alert.site_id,
        d.alert.alert_id,
        d.endpoint_id,
        owner,
        next_at,
        status,
        error,
        d.message,
    )


async def mark_dead(
    conn: Conn, d: ClaimedDelivery, owner: str, status: int | None, error: str
) -> None:
    await conn.execute(
        MARK_DEAD, d.alert.site_id, d.alert.alert_id, d.endpoint_id, owner, status, error, d.message
    )


async def list_dead(conn: Conn, sites: list[str] | None, limit: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(LIST_DEAD, sites, limit)]


async def replay_dead(
    conn: Conn, alert_ids: list[UUID] | None, endpoint_id: UUID | None, now: datetime
) -> int:
    rows = await conn.fetch(REPLAY_DEAD, alert_ids, endpoint_id, now)
    if rows:
        await notify(conn, OUTBOX_CHANNEL, "replay")
    return len(rows)


async def delivery_counts(conn: Conn) -> dict[str, int]:
    return {r["status"]: int(r["n"]) for r in await conn.fetch(DELIVERY_COUNTS)}


async def insert_hold(
    conn: Conn,
    site_id: str,
    hold_id: UUID,
    waybill_no: str,
    reason: str,
    scan_id: UUID | None,
    now: datetime,
) -> bool:
    """Put the parcel on hold (one open hold per parcel); pushed to stations after commit."""
    got = await conn.fetchval(INSERT_HOLD, site_id, hold_id, waybill_no, reason, scan_id, now)
    if got is None:
        return False
    await notify(conn, HOLDS_CHANNEL, site_id)
    return True


async def unacked_holds(conn: Conn, sites: list[str]) -> list[Hold]:
    return [_hold(r) for r in await conn.fetch(UNACKED_HOLDS, sites)]


MARK_PUSHED = """
UPDATE holds SET pushed_at = $3
FROM unnest($1::text[], $2::uuid[]) AS p(site_id, hold_id)
WHERE holds.site_id = p.site_id AND holds.hold_id = p.hold_id AND holds.pushed_at IS NULL
"""


async def mark_pushed(conn: Conn, holds: list[tuple[str, UUID]], now: datetime) -> None:
    """Record that these hold orders reached a station's socket (the first time counts)."""
    if holds:
        await conn.execute(MARK_PUSHED, [h[0] for h in holds], [h[1] for h in holds], now)


async def ack_hold(conn: Conn, sites: list[str], order_id: UUID, now: datetime) -> bool:
    """A station acknowledged a hold (by its hold_id) or a release (by its release_id)."""
    return await conn.fetchval(ACK_HOLD, sites, order_id, now) is not None


async def close_hold(
    conn: Conn, site_id: str, hold_id: UUID, status: str, now: datetime, actor: str
) -> Hold | None:
    row = await conn.fetchrow(CLOSE_HOLD, site_id, hold_id, status, now, actor)
    if row is not None:
        await notify(conn, HOLDS_CHANNEL, site_id)
    return None if row is None else _hold(row)


PARCEL_HAS_OPEN_ALERT = """
SELECT EXISTS (SELECT 1 FROM alerts
               WHERE site_id = $1 AND waybill_no = $2 AND status <> 'closed')
"""


PARCEL_SEIZED = """
SELECT EXISTS (SELECT 1 FROM holds
               WHERE site_id = $1 AND waybill_no = $2 AND status = 'seized')
    OR EXISTS (SELECT 1 FROM alerts
               WHERE site_id = $1 AND waybill_no = $2 AND disposition = 'seized')
"""


async def parcel_seized(conn: Conn, site_id: str, waybill_no: str) -> bool:
    """Whether police seized the parcel (its hold, or an alert closed as seized)."""
    return bool(await conn.fetchval(PARCEL_SEIZED, site_id, waybill_no))


async def parcel_has_open_alert(conn: Conn, site_id: str, waybill_no: str) -> bool:
    """Whether police hold an alert on the parcel that they have not closed."""
    return bool(await conn.fetchval(PARCEL_HAS_OPEN_ALERT, site_id, waybill_no))


async def close_parcel_hold(
    conn: Conn, site_id: str, waybill_no: str, status: str, now: datetime, actor: str
) -> Hold | None:
    row = await conn.fetchrow(CLOSE_HOLD_OF_PARCEL, site_id, waybill_no, status, now, actor)
    if row is not None:
        await notify(conn, HOLDS_CHANNEL, site_id)
    return None if row is None else _hold(row)


async def get_hold(conn: Conn, hold_id: UUID, sites: list[str] | None) -> Hold | None:
    row = await conn.fetchrow(SELECT_HOLD, hold_id, sites)
    return None if row is None else _hold(row)


async def list_holds(
    conn: Conn, sites: list[str] | None, status: str | None, limit: int
) -> list[Hold]:
    return [_hold(r) for r in await conn.fetch(LIST_HOLDS, sites, status, limit)]


async def open_holds_of(conn: Conn, parcels: Sequence[tuple[str, str]]) -> list[Hold]:
    if not parcels:
        return []
    rows = await conn.fetch(OPEN_HOLDS_OF_PARCELS, [p[0] for p in parcels], [p[1] for p in parcels])
    return [_hold(r) for r in rows]


async def find_sender(
    conn: Conn, site_id: str, event_id: UUID | None, waybill_no: str | None
) -> asyncpg.Record | None:
    if event_id is None and waybill_no is None:
        return None
    row: asyncpg.Record | None = await conn.fetchrow(SELECT_SENDER, site_id, event_id, waybill_no)
    return row


async def record_pii_read(
    conn: Conn,
    alert: Alert,
    read_id: UUID,
    record_event_id: UUID,
    reader: str,
    purpose: str,
    now: datetime,
) -> None:
    await conn.execute(
        INSERT_PII_READ,
        alert.site_id,
        read_id,
        alert.alert_id,
        record_event_id,
        reader,
        purpose,
        now,
    )


async def list_pii_reads(conn: Conn, alert: Alert) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch(LIST_PII_READS, alert.site_id, alert.alert_id)]
