-- Every commit of a site's day added its deltas to the same rollup rows and held them locked to
-- its COMMIT, so a site's concurrent commits queued on those rows. Each connection now adds to
-- one stripe of them (storage.parcels.ROLLUP_STRIPES, chosen by its server process id); the
-- rate queries sum the stripes, at most 16 rows per site, day and flow. The rows that were
-- there before are stripe 0.
ALTER TABLE site_daily_rates ADD COLUMN stripe smallint NOT NULL DEFAULT 0;
ALTER TABLE site_daily_rates DROP CONSTRAINT site_daily_rates_pkey;
ALTER TABLE site_daily_rates ADD PRIMARY KEY (site_id, day, flow, stripe);
