-- Web console sessions (screening.web): a random session id in an HttpOnly cookie maps to the API
-- key that signed in. Only SHA-256 of the id is stored, so a copy of this table cannot be replayed
-- as cookies; the key's role and sites are read through api_keys on every request, so revoking
-- the key ends its sessions at once. Not per-site data: a small reference-like table.
CREATE TABLE console_sessions (
    session_hash  bytea PRIMARY KEY,
    key_id        text NOT NULL REFERENCES api_keys(key_id) ON DELETE CASCADE,
    csrf_token    text NOT NULL,                -- compared with the X-CSRF-Token header
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
