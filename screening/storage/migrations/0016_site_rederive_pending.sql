-- Set when a site's policy (time zone, X-ray flows) changes, in the same statement; cleared once
-- every stored parcel of the site has been derived again under the new policy. A re-derivation
-- that was interrupted (the command stopped, the connection lost) is resumed by the next
-- `screening sites add` of the site, whatever it changes.
ALTER TABLE sites ADD COLUMN rederive_pending boolean NOT NULL DEFAULT false;
