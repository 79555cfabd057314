-- X-ray image uploads (POST /v1/scans) and the site's per-class verdict thresholds.

ALTER TABLE sites ADD COLUMN xray_thresholds jsonb NOT NULL DEFAULT '{}';

CREATE TABLE scan_uploads (
    site_id         text NOT NULL REFERENCES sites(site_id),
    scan_id         uuid NOT NULL,                  -- the client's id: a resend is a duplicate
    event_id        uuid,                           -- the xray.scanned event (NULL when unbound)
    waybill_no      text,                           -- NULL: no barcode read (unbound scan)
    scanner_id      text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    content_digest  bytea NOT NULL,                 -- SHA-256 over metadata and image digests
    image_sha256    text NOT NULL,                  -- content-addressed files under the data dir
    image_type      text NOT NULL,
    high_sha256     text,
    low_sha256      text,
    width           integer NOT NULL,
    height          integer NOT NULL,
    verdict         text NOT NULL,
    findings        jsonb NOT NULL,
    max_scores      jsonb NOT NULL,
    model_version   text NOT NULL,
    inference_ms    real NOT NULL,
    PRIMARY KEY (site_id, scan_id)
);
CREATE INDEX scan_uploads_by_waybill ON scan_uploads (site_id, waybill_no);
CREATE INDEX scan_uploads_by_day ON scan_uploads (site_id, occurred_at);
