-- Portcullis schema, version 3: CSRs with server-side keys and signature requests, and CA
-- certificates imported with their key (which may then issue server certificates).

-- The CA's private key when it was imported with one (PKCS#12), AAD `ca_certificates/<id>/key`.
ALTER TABLE ca_certificates ADD COLUMN key_sealed BLOB;

CREATE TABLE csrs (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    alias              TEXT NOT NULL,
    common_name        TEXT NOT NULL,
    -- JSON array of lower-case DNS names.
    dns_names          TEXT NOT NULL,
    key_type           TEXT NOT NULL,
    csr_pem            TEXT NOT NULL,
    -- The key generated for it, AAD `csrs/<id>/key`.
    key_sealed         BLOB NOT NULL,
    status             TEXT NOT NULL
        CHECK (status IN ('generated', 'pending_approval', 'completed', 'rejected')),
    -- Who asked for a signature ("admin" or a token id) and its name and role, what was asked
    -- (JSON `{"self_signed", "issuer"}`) and why.
    requested_by_id    TEXT,
    requested_by       TEXT,
    requested_role     TEXT,
    request            TEXT,
    request_reason     TEXT,
    decided_by         TEXT,
    decision_reason    TEXT,
    -- The server certificate it became.
    server_certificate TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX csrs_page ON csrs (org, created_at, id);
