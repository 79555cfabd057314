-- Closing a hold (released or seized) is an order to the station too: the release is pushed down
-- the station WebSockets, under its own id, until a station acknowledges it (as a hold is).
ALTER TABLE holds
    ADD COLUMN release_id        uuid,                -- set when the hold closes
    ADD COLUMN release_acked_at  timestamptz;

-- Holds closed before this migration are not announced now.
UPDATE holds SET release_id = gen_random_uuid(), release_acked_at = closed_at
WHERE status <> 'open';

CREATE UNIQUE INDEX holds_release ON holds (site_id, release_id) WHERE release_id IS NOT NULL;
CREATE INDEX holds_unannounced ON holds (site_id)
    WHERE (status = 'open' AND acked_at IS NULL)
       OR (status <> 'open' AND release_acked_at IS NULL);
