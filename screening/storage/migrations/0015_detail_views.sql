-- Inspections, seals and dispatches are the event log's rows of those types, read out of their
-- payloads. They were tables filled from the log in the ingest statement: a second copy of each
-- event that nothing read, that the ledger did not bind (it binds the log) and that a database
-- writer could change on its own. As views they are the log itself. Real-name records stay a
-- table (they hold the sealed personal data, which the log does not); so do scans, which the
-- monthly report reads by site and time.
DROP TABLE inspections;
DROP TABLE seals;
DROP TABLE dispatches;

CREATE VIEW inspections AS
SELECT site_id, event_id, waybill_no, occurred_at, payload->>'clerk_id' AS clerk_id,
       payload->>'result' AS result, coalesce(payload->>'note', '') AS note
FROM events WHERE event_type = 'inspection.completed';

CREATE VIEW seals AS
SELECT site_id, event_id, waybill_no, occurred_at, payload->>'clerk_id' AS clerk_id
FROM events WHERE event_type = 'parcel.sealed';

CREATE VIEW dispatches AS
SELECT site_id, event_id, waybill_no, occurred_at, payload->>'carrier' AS carrier
FROM events WHERE event_type = 'parcel.dispatched';
