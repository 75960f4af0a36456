-- Portcullis schema, version 10 (DESIGN §12): TLS session ticket keys, one random key per org and
-- rotation epoch (unix time / rotation period), sealed with the master key, so that a ticket made
-- by one node opens on every node. Keys before the previous epoch are deleted.

CREATE TABLE ticket_keys (
    org        TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    epoch      INTEGER NOT NULL,
    key_sealed BLOB NOT NULL,
    PRIMARY KEY (org, epoch)
);
CREATE INDEX ticket_keys_epoch ON ticket_keys (epoch);
