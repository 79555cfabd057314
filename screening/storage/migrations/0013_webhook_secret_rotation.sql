-- Webhook secret rotation (Standard Webhooks): after a rotation the relay signs every request with
-- the new secret and, until previous_secret_until, with the secret before it as well (the
-- signature header carries both), so a police receiver can switch the secret it verifies with at
-- any moment of that window without refusing an alert.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret text,
    ADD COLUMN previous_secret_until timestamptz,
    ADD COLUMN secret_rotated_at timestamptz;
