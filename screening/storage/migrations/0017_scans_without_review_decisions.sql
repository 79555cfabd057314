-- A reviewer's or the police's decision on a flagged scan is logged as an xray.scanned event
-- that names the scan it decides (reviewed_event_id). Ingest wrote those into scans as well,
-- each a copy of the scan with verdict 'flagged', so the monthly report counted every decided
-- scan once more per decision. scans holds the scanners' own scans only.
DELETE FROM scans s
USING events e
WHERE s.verdict = 'flagged'  -- every decision row is; most scans are not, and are not joined
  AND e.site_id = s.site_id AND e.event_id = s.event_id
  AND e.event_type = 'xray.scanned'
  AND e.payload->>'reviewed_event_id' IS NOT NULL;
