-- TLS session ticket keys (DESIGN §12), as SQLite's migration 0010: one random key per org and
-- rotation epoch, sealed with the master key, shared by every node. Not part of an org's
-- snapshot, so no NOTIFY: a node reads them when it needs an epoch it does not hold.

CREATE TABLE ticket_keys (
    org        TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    epoch      BIGINT NOT NULL,
    key_sealed BYTEA NOT NULL,
    PRIMARY KEY (org, epoch)
);
CREATE INDEX ticket_keys_epoch ON ticket_keys (epoch);
