-- Portcullis schema, version 6: the CRL held for each CA certificate (DESIGN §11), kept so a
-- restart needs no network.

CREATE TABLE crls (
    ca_id       TEXT PRIMARY KEY NOT NULL REFERENCES ca_certificates (id) ON DELETE CASCADE,
    org         TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    der         BLOB NOT NULL,
    this_update INTEGER NOT NULL,
    -- NULL: the CRL names no next update.
    next_update INTEGER,
    entries     INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
