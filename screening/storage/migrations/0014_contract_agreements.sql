-- Every security agreement a contract customer has had, not only its latest. A registration that
-- arrives late (its station was offline) is judged by the agreement that covered its day, which
-- after a renewal is no longer the one contract_customers names.
CREATE TABLE contract_agreements (
    site_id       text NOT NULL,
    customer_ref  text NOT NULL,
    agreement_no  text NOT NULL,
    valid_from    date NOT NULL,
    valid_until   date,                   -- NULL: until ended
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, customer_ref, agreement_no),
    FOREIGN KEY (site_id, customer_ref) REFERENCES contract_customers (site_id, customer_ref),
    CHECK (valid_until IS NULL OR valid_until >= valid_from)
);
INSERT INTO contract_agreements (site_id, customer_ref, agreement_no, valid_from, valid_until)
SELECT site_id, customer_ref, agreement_no, valid_from, valid_until FROM contract_customers;
