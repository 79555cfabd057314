-- A reviewer who skips an item gives its lease back at once; the skip is remembered (who, when,
-- how often) so that this reviewer is handed every other waiting item before this one again.
CREATE TABLE review_skips (
    site_id     text NOT NULL,
    item_id     uuid NOT NULL,
    reviewer    text NOT NULL,                        -- API key id
    skipped_at  timestamptz NOT NULL,                 -- the latest skip
    skips       integer NOT NULL DEFAULT 1,
    PRIMARY KEY (site_id, item_id, reviewer)
);
