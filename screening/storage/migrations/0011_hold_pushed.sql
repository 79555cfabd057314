-- When a hold order was first written to a station's socket. A station may stop its belt for a
-- hold whose acknowledgement never arrives (the link dropped right after); its release must
-- reach it all the same, so releases go to holds that were pushed, not only to acknowledged ones.
ALTER TABLE holds ADD COLUMN pushed_at timestamptz;
UPDATE holds SET pushed_at = acked_at WHERE acked_at IS NOT NULL;
