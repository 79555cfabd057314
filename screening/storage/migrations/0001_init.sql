-- Foundation schema. Every primary and unique key of a per-site table starts with site_id so the
-- tables can later be distributed by site (Citus); sites and api_keys are small reference tables.

CREATE TABLE sites (
    site_id     text PRIMARY KEY,
    name        text NOT NULL,
    timezone    text NOT NULL DEFAULT 'Asia/Shanghai',
    -- flows whose parcels must be X-rayed (design.md: default every flow)
    xray_flows  text[] NOT NULL
                DEFAULT ARRAY['air','rail','international','inter_province','intra_province','same_city'],
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    key_hash    bytea NOT NULL UNIQUE,          -- SHA-256 of the whole key; the key is shown once
    role        text NOT NULL CHECK (role IN ('station','reviewer','supervisor','police','admin')),
    site_ids    text[] NOT NULL,                -- scope; empty only for admin (all sites)
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- The raw event log: every accepted event, personal data removed (it lives encrypted in
-- realname_records). payload_digest is a keyed HMAC of the full canonical payload, used to tell
-- a duplicate (same digest) from a conflict (same event_id, other digest).
CREATE TABLE events (
    site_id         text NOT NULL REFERENCES sites(site_id),
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    waybill_no      text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    payload         jsonb NOT NULL,
    payload_digest  bytea NOT NULL,
    PRIMARY KEY (site_id, event_id)
);
CREATE INDEX events_by_waybill ON events (site_id, waybill_no);

CREATE TABLE parcels (
    site_id         text NOT NULL REFERENCES sites(site_id),
    waybill_no      text NOT NULL,
    flow            text,
    carrier         text,
    first_seen_at   timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    dispatched_at   timestamptz,
    dispatch_day    date,                       -- in the site's time zone
    rate_flow       text,                       -- flow bucket the parcel counts in
    xray_required   boolean NOT NULL,
    realname_ok     boolean NOT NULL,
    inspection_ok   boolean NOT NULL,
    xray_ok         boolean NOT NULL,
    compliant       boolean NOT NULL,
    problems        text[] NOT NULL,
    PRIMARY KEY (site_id, waybill_no)
);
CREATE INDEX parcels_by_dispatch_day ON parcels (site_id, dispatch_day) WHERE dispatch_day IS NOT NULL;

CREATE TABLE realname_records (
    site_id                 text NOT NULL,
    event_id                uuid NOT NULL,
    waybill_no              text NOT NULL,
    occurred_at             timestamptz NOT NULL,
    contract_customer_ref   text,
    document_type           text,
    document_masked         text,
    document_hmac           bytea,              -- keyed HMAC, for matching (watchlists)
    pii_key_id              text,               -- which AES-GCM key sealed the *_sealed columns
    document_sealed         bytea,
    name_masked             text,
    name_sealed             bytea,
    phone_masked            text,
    phone_sealed            bytea,
    document_expires_on     date,
    verification            text NOT NULL,
    document_valid          boolean NOT NULL,
    PRIMARY KEY (site_id, event_id)
);
CREATE INDEX realname_by_waybill ON realname_records (site_id, waybill_no);
CREATE INDEX realname_by_hmac ON realname_records (document_hmac) WHERE document_hmac IS NOT NULL;

CREATE TABLE inspections (
    site_id      text NOT NULL,
    event_id     uuid NOT NULL,
    waybill_no   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    clerk_id     text NOT NULL,
    result       text NOT NULL,
    note         text NOT NULL DEFAULT '',
    PRIMARY KEY (site_id, event_id)
);
CREATE INDEX inspections_by_waybill ON inspections (site_id, waybill_no);

CREATE TABLE seals (
    site_id      text NOT NULL,
    event_id     uuid NOT NULL,
    waybill_no   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    clerk_id     text NOT NULL,
    PRIMARY KEY (site_id, event_id)
);
CREATE INDEX seals_by_waybill ON seals (site_id, waybill_no);

CREATE TABLE scans (
    site_id      text NOT NULL,
    event_id     uuid NOT NULL,
    waybill_no   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    scanner_id   text NOT NULL,
    image_ref    text,
    verdict      text NOT NULL,
    detections   jsonb NOT NULL DEFAULT '[]',
    model_version text,
    PRIMARY KEY (site_id, event_id)
);
CREATE INDEX scans_by_waybill ON scans (site_id, waybill_no);

CREATE TABLE dispatches (
    site_id      text NOT NULL,
    event_id     uuid NOT NULL,
    waybill_no   text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    carrier      text,
    PRIMARY KEY (site_id, event_id)
);
CREATE INDEX dispatches_by_waybill ON dispatches (site_id, waybill_no);

-- Current violations of dispatched parcels; rewritten whenever the parcel's status changes.
CREATE TABLE violations (
    site_id       text NOT NULL,
    waybill_no    text NOT NULL,
    reason        text NOT NULL,
    rule          text NOT NULL,
    dispatch_day  date NOT NULL,
    flow          text NOT NULL,
    dispatched_at timestamptz NOT NULL,
    detected_at   timestamptz NOT NULL,
    PRIMARY KEY (site_id, waybill_no, reason)
);
CREATE INDEX violations_by_day ON violations (site_id, dispatch_day, reason);

-- Rate rollup: counters per site, day and flow, maintained by deltas in the ingest transaction.
-- A month of rates is at most 31 x 7 rows per site, whatever the parcel volume.
CREATE TABLE site_daily_rates (
    site_id         text NOT NULL,
    day             date NOT NULL,
    flow            text NOT NULL,
    dispatched      bigint NOT NULL DEFAULT 0,
    realname_ok     bigint NOT NULL DEFAULT 0,
    inspection_ok   bigint NOT NULL DEFAULT 0,
    xray_ok         bigint NOT NULL DEFAULT 0,
    all_ok          bigint NOT NULL DEFAULT 0,
    xray_required   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day, flow)
);
