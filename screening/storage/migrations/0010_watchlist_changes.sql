-- Who put a document on the police watchlist and who took it off, and when: the watchlist row
-- itself only says who added it last, and a removal left no trace at all.
CREATE TABLE watchlist_changes (
    document_hmac  bytea NOT NULL,
    change         text NOT NULL CHECK (change IN ('added', 'removed')),
    label          text NOT NULL,
    actor          text NOT NULL,       -- the key id
    at             timestamptz NOT NULL
);
CREATE INDEX watchlist_changes_by_entry ON watchlist_changes (document_hmac, at);
