-- One police alert per incident. A reviewer's confirmation of a scan that already alerted police
-- on its score annotates that alert (who, when, which review item, which category) and bumps its
-- revision, instead of raising a second alert for the same scan. Police hear it as an update: an
-- `alert.updated` webhook (its own outbox row and webhook-id) and, on the live feed, the alert
-- moving to the feed's end (a new txid and seq), sent again with its new revision.
ALTER TABLE alerts
    ADD COLUMN revision            integer NOT NULL DEFAULT 1,  -- +1 per update sent to police
    ADD COLUMN confirmed_by        text,                        -- the reviewer's API key id
    ADD COLUMN confirmed_at        timestamptz,
    ADD COLUMN confirmed_item_id   uuid,                        -- the review item confirmed
    ADD COLUMN confirmed_category  text;

-- Alerts raised by a confirmation before this migration carry their confirmation too, so the
-- reviewers' false-alarm counts keep finding them.
UPDATE alerts a
SET confirmed_by = r.decided_by, confirmed_at = r.decided_at, confirmed_item_id = r.item_id,
    confirmed_category = r.decided_category
FROM review_items r
WHERE a.cause = 'review_confirmed' AND r.site_id = a.site_id
  AND a.dedupe_key = 'review:' || r.item_id::text;

CREATE INDEX alerts_by_confirmed_item ON alerts (site_id, confirmed_item_id)
    WHERE confirmed_item_id IS NOT NULL;

-- The outbox: one row per (alert, message, endpoint). 'created' is the alert itself; 'confirmed'
-- is the update a review confirmation sends about an alert police already have.
ALTER TABLE alert_deliveries ADD COLUMN message text NOT NULL DEFAULT 'created';
ALTER TABLE alert_deliveries DROP CONSTRAINT alert_deliveries_pkey;
ALTER TABLE alert_deliveries ADD PRIMARY KEY (site_id, alert_id, message, endpoint_id);
