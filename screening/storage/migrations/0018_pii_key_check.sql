-- Which matching key this database's records were made with: an HMAC, under that key, of a
-- fixed text (never the key). Event digests (duplicate or conflict) and document matching use
-- the key, so every gateway serving the database must hold the same one; the first to start
-- records it here and each later start compares (screening.services.pii.check_keys).
CREATE TABLE pii_key_check (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    hmac_check  bytea NOT NULL,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
