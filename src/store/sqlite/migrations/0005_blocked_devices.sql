-- Portcullis schema, version 5: the device blocklist (DESIGN §11). A row blocks one identity,
-- one certificate (by fingerprint), or one serial of one of the org's CAs.

CREATE TABLE blocked_devices (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- `d:<type>:<id>`, `g:<type>:<id>` or `a:<app>`.
    identity           TEXT,
    fingerprint_sha256 TEXT,
    ca_id              TEXT,
    -- Lower-case hex, as the CA resource shows serials.
    serial             TEXT,
    reason             TEXT NOT NULL DEFAULT '',
    created_by         TEXT NOT NULL,
    created_at         INTEGER NOT NULL,
    CHECK ((identity IS NOT NULL) + (fingerprint_sha256 IS NOT NULL) + (serial IS NOT NULL) = 1),
    CHECK ((serial IS NULL) = (ca_id IS NULL))
);
CREATE INDEX blocked_devices_page ON blocked_devices (org, created_at, id);
