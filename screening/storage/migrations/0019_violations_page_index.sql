-- Pages of a site's violations are walked in (dispatched_at, waybill_no, reason) order from a
-- cursor (storage.parcels.SELECT_VIOLATIONS_PAGE); without an index on that order each page
-- sorted every violation of the period, so walking a busy month cost its size squared.
CREATE INDEX violations_page ON violations (site_id, dispatched_at, waybill_no, reason);
