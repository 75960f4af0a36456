-- Portcullis schema, version 2: token signing certificates, org tokens, audit events, and the
-- org setting naming the roles whose signature requests need approval.

-- JSON array of roles ("operator", "approver", "viewer").
ALTER TABLE orgs ADD COLUMN approval_required_roles TEXT NOT NULL DEFAULT '[]';
-- The signing certificate new tokens are signed with (NULL: none, no token can be issued).
-- Deleting the default is refused by the API; the store checks it belongs to the org.
ALTER TABLE orgs ADD COLUMN default_signing_certificate TEXT;

CREATE TABLE signing_certificates (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    alias              TEXT NOT NULL,
    -- PEM, leaf first.
    chain_pem          TEXT NOT NULL,
    -- The private key (its format byte, then DER), AAD `signing_certificates/<id>/key`.
    key_sealed         BLOB NOT NULL,
    subject            TEXT NOT NULL,
    issuer             TEXT NOT NULL,
    serial             TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    not_before         INTEGER NOT NULL,
    not_after          INTEGER NOT NULL,
    common_name        TEXT,
    dns_names          TEXT NOT NULL,
    registered_at      INTEGER NOT NULL,
    UNIQUE (org, fingerprint_sha256)
);
CREATE INDEX signing_certificates_page ON signing_certificates (org, registered_at, id);

-- Org tokens (JWTs). The token itself is never stored: only what verifies and revokes it.
CREATE TABLE tokens (
    -- Also the JWT's `jti`.
    id                  TEXT PRIMARY KEY NOT NULL,
    org                 TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('operator', 'approver', 'viewer')),
    status              TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    -- NULL once that signing certificate is deleted (the token is then revoked).
    signing_certificate TEXT,
    created_by          TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER NOT NULL
);
CREATE INDEX tokens_page ON tokens (org, created_at, id);
CREATE INDEX tokens_signing ON tokens (signing_certificate);

-- Every change made through the admin API. Kept when the org is deleted (its deletion is one).
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY NOT NULL,
    org        TEXT NOT NULL,
    at         INTEGER NOT NULL,
    -- "admin" (the bootstrap token) or an org token's name, with its role.
    actor      TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    -- `<resource>.<verb>`, e.g. `ca_certificate.create`.
    action     TEXT NOT NULL,
    -- The id of the resource changed, when it has one.
    target     TEXT,
    reason     TEXT
);
CREATE INDEX audit_events_page ON audit_events (org, at, id);
