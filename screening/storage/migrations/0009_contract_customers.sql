-- Contract customers (协议客户): senders with a signed security agreement on file, whose parcels
-- need no identity document (快递暂行条例 Art 23). A realname.registered event naming one counts
-- only if the agreement covers the day of the event; ingest records the agreement it found in
-- the event's stored payload, so recomputing a parcel later judges it the same way.
CREATE TABLE contract_customers (
    site_id       text NOT NULL REFERENCES sites (site_id),
    customer_ref  text NOT NULL,          -- what stations send as contract_customer_ref
    name          text NOT NULL,          -- the organisation
    uscc          text NOT NULL,          -- its unified social credit code (GB 32100)
    agreement_no  text NOT NULL,          -- the security agreement's number
    valid_from    date NOT NULL,
    valid_until   date,                   -- NULL: until ended
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, customer_ref),
    CHECK (valid_until IS NULL OR valid_until >= valid_from)
);
