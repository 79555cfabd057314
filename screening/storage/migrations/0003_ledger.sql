-- Tamper-evident per-site ledger: each site's accepted events form an RFC 9162 Merkle log
-- (hashing, proofs and the entry format: screening/domain/ledger.py). Every key starts with
-- site_id so the ledger distributes with the rest of a site's data. No foreign key ties a leaf
-- to its event: removing an event must stay possible (retention) and must show up in a
-- verification, not be silently blocked or cascaded.

-- One row per site, locked (SELECT ... FOR UPDATE) by every append: the compact range of the
-- tree, so an append and the current root cost O(log n) whatever the tree's size.
CREATE TABLE ledger_state (
    site_id     text PRIMARY KEY REFERENCES sites(site_id),
    tree_size   bigint NOT NULL CHECK (tree_size >= 0),
    frontier    bytea[] NOT NULL,       -- right-edge perfect subtree roots, largest first
    root_hash   bytea NOT NULL,         -- MTH of the whole tree (cached fold of frontier)
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The leaves, in log order: leaf_hash = SHA-256(0x00 || entry); the entry itself is re-derived
-- from the event row when verifying, so nothing here repeats event content.
CREATE TABLE ledger_leaves (
    site_id     text NOT NULL,
    leaf_index  bigint NOT NULL CHECK (leaf_index >= 0),
    event_id    uuid NOT NULL,
    leaf_hash   bytea NOT NULL,
    PRIMARY KEY (site_id, leaf_index),
    UNIQUE (site_id, event_id)
);

-- Roots of completed perfect subtrees at levels 8, 16, 24, ... (tiles of height 8, as in
-- C2SP tlog-tiles): proofs rebuild any subtree from at most 128 stored hashes instead of
-- reading every leaf under it. About n/255 rows for n leaves.
CREATE TABLE ledger_nodes (
    site_id     text NOT NULL,
    level       smallint NOT NULL CHECK (level > 0),
    node_index  bigint NOT NULL CHECK (node_index >= 0),
    hash        bytea NOT NULL,
    PRIMARY KEY (site_id, level, node_index)
);

-- Signed checkpoints (C2SP tlog-checkpoint notes), one per site and tree size.
CREATE TABLE ledger_checkpoints (
    site_id     text NOT NULL,
    tree_size   bigint NOT NULL CHECK (tree_size >= 0),
    root_hash   bytea NOT NULL,
    note        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, tree_size)
);
