-- A reviewer's clear releases the parcel's hold only when no other flagged scan of the parcel
-- still waits for review: that check reads the pending items of one parcel.
CREATE INDEX review_items_pending_by_parcel ON review_items (site_id, waybill_no)
    WHERE status = 'pending';
