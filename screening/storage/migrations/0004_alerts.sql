-- Flagged parcels: alert policy, watchlist, review queue, hold orders, police alerts with a
-- transactional outbox of webhook deliveries, and the audit of personal-data reads.
-- Per-site tables key on site_id first; policies, watchlist, endpoints and reviewer levels are
-- small reference tables.

-- The alert policy is versioned data: a new version is a new row; the highest one is in force.
CREATE TABLE alert_policies (
    version     integer PRIMARY KEY,
    rules       jsonb NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL
);

-- Police-supplied keyed-HMAC digests of document numbers (PersonalDataVault.digest("document")),
-- matched against realname_records.document_hmac; never a plaintext number.
CREATE TABLE watchlist (
    document_hmac  bytea PRIMARY KEY,
    label          text NOT NULL DEFAULT '',
    added_by       text NOT NULL,
    added_at       timestamptz NOT NULL
);

CREATE TABLE webhook_endpoints (
    endpoint_id      uuid PRIMARY KEY,
    url              text NOT NULL,
    secret           text NOT NULL,               -- whsec_<base64>, one per endpoint
    site_ids         text[] NOT NULL,             -- empty: every site
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    created_at       timestamptz NOT NULL
);

CREATE TABLE alerts (
    site_id          text NOT NULL,
    alert_id         uuid NOT NULL,
    seq              bigserial NOT NULL,
    -- The writing transaction's id: the live feed delivers in (txid, seq) order and only below
    -- the oldest running transaction, so a resumed feed never skips a late-committing alert.
    txid             bigint NOT NULL DEFAULT (pg_current_xact_id()::text)::bigint,
    dedupe_key       text NOT NULL,               -- one alert per cause (scan, item, event)
    cause            text NOT NULL,
    category         text NOT NULL,
    score            real,
    waybill_no       text,
    scan_id          uuid,
    source_event_id  uuid,
    policy_version   integer NOT NULL,
    occurred_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'open',  -- open, acknowledged, assigned, closed
    assignee         text,
    disposition      text,                          -- seized, released, false_alarm
    closed_at        timestamptz,
    PRIMARY KEY (site_id, alert_id),
    UNIQUE (site_id, dedupe_key)
);
CREATE INDEX alerts_feed ON alerts (txid, seq);
CREATE INDEX alerts_by_time ON alerts (site_id, created_at);
CREATE INDEX alerts_by_waybill ON alerts (site_id, waybill_no);

-- Every police action on an alert (acknowledge, assign, close), append-only.
CREATE TABLE alert_actions (
    site_id    text NOT NULL,
    alert_id   uuid NOT NULL,
    action_id  uuid NOT NULL,
    action     text NOT NULL,
    actor      text NOT NULL,                     -- API key id
    at         timestamptz NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (site_id, alert_id, action_id)
);

-- The outbox: one row per (alert, endpoint), written in the alert's transaction.
CREATE TABLE alert_deliveries (
    site_id          text NOT NULL,
    alert_id         uuid NOT NULL,
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints(endpoint_id),
    status           text NOT NULL DEFAULT 'pending',   -- pending, delivered, dead
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    locked_until     timestamptz,                       -- a relay's lease
    locked_by        text,
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    PRIMARY KEY (site_id, alert_id, endpoint_id)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX alert_deliveries_dead ON alert_deliveries (site_id) WHERE status = 'dead';

CREATE TABLE holds (
    site_id      text NOT NULL,
    hold_id      uuid NOT NULL,
    waybill_no   text NOT NULL,
    reason       text NOT NULL,
    scan_id      uuid,
    created_at   timestamptz NOT NULL,
    acked_at     timestamptz,
    status       text NOT NULL DEFAULT 'open',        -- open, released, seized
    closed_at    timestamptz,
    closed_by    text,
    PRIMARY KEY (site_id, hold_id)
);
CREATE UNIQUE INDEX holds_one_open ON holds (site_id, waybill_no) WHERE status = 'open';

CREATE TABLE review_items (
    site_id           text NOT NULL,
    item_id           uuid NOT NULL,
    kind              text NOT NULL,                  -- flagged, audit, tip (never shown)
    level             smallint NOT NULL DEFAULT 1,
    status            text NOT NULL DEFAULT 'pending', -- pending, done
    scan_id           uuid,
    event_id          uuid,                           -- the xray.scanned event, when bound
    waybill_no        text,
    findings          jsonb NOT NULL DEFAULT '[]',
    score             real,
    category          text,
    image_sha256      text NOT NULL,
    image_type        text NOT NULL,
    tip_truth         jsonb,                          -- projected threats (tip items only)
    occurred_at       timestamptz NOT NULL,
    created_at        timestamptz NOT NULL,
    lease_owner       text,
    lease_until       timestamptz,
    decision          text,
    decided_by        text,
    decided_at        timestamptz,
    decided_category  text,
    PRIMARY KEY (site_id, item_id)
);
CREATE UNIQUE INDEX review_items_once ON review_items (site_id, scan_id, kind)
    WHERE kind <> 'tip';
CREATE INDEX review_items_queue ON review_items (level, created_at) WHERE status = 'pending';

CREATE TABLE review_decisions (
    site_id      text NOT NULL,
    decision_id  uuid NOT NULL,
    item_id      uuid NOT NULL,
    kind         text NOT NULL,
    level        smallint NOT NULL,
    reviewer     text NOT NULL,                       -- API key id
    decided_at   timestamptz NOT NULL,
    decision     text NOT NULL,                       -- confirm, clear, escalate
    category     text,
    note         text NOT NULL DEFAULT '',
    PRIMARY KEY (site_id, decision_id)
);
CREATE INDEX review_decisions_by_reviewer ON review_decisions (reviewer, decided_at);

CREATE TABLE reviewer_levels (
    key_id  text PRIMARY KEY,
    level   smallint NOT NULL CHECK (level IN (1, 2))
);

-- Every disclosure of a sender's identity: who, when, which record, and the stated purpose.
CREATE TABLE personal_data_reads (
    site_id          text NOT NULL,
    read_id          uuid NOT NULL,
    alert_id         uuid NOT NULL,
    record_event_id  uuid NOT NULL,                   -- the realname_records row opened
    reader           text NOT NULL,                   -- API key id
    purpose          text NOT NULL,
    read_at          timestamptz NOT NULL,
    PRIMARY KEY (site_id, read_id)
);
