-- Portcullis schema, version 7: the device registry (DESIGN §11): each identity authenticated,
-- with the certificate it presented, written behind the connect path.

CREATE TABLE devices (
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- `d:<type>:<id>`, `g:<type>:<id>` or `a:<app>`: the identity its client id bound.
    identity           TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    ca_id              TEXT NOT NULL,
    serial             TEXT NOT NULL,
    not_after          INTEGER NOT NULL,
    first_seen         INTEGER NOT NULL,
    last_seen          INTEGER NOT NULL,
    PRIMARY KEY (org, identity, fingerprint_sha256)
);
CREATE INDEX devices_page ON devices (org, first_seen, fingerprint_sha256);
