-- Portcullis schema, version 1.
-- Times are INTEGER unix microseconds (UTC). Ids are 32 lower-case hex digits, time-ordered.
-- Sealed values (`*_sealed`) are AES-256-GCM envelopes made by store/crypto.rs:
-- version || nonce || ciphertext || tag, with AAD `<table>/<row id>/<purpose>`.
-- Kept to portable SQL (no AUTOINCREMENT, no SQLite-only types) so PostgreSQL can follow it.

-- A value sealed with the master key when the store was created: opening it on start tells a
-- wrong master key apart from damaged rows.
CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

CREATE TABLE orgs (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL,
    topic_policy TEXT NOT NULL CHECK (topic_policy IN ('iot-2', 'open')),
    -- NULL: the platform default certificate. The composite key keeps it within the org, and
    -- deleting the active certificate fails (the API answers 409 before it gets here).
    active_server_certificate TEXT,
    created_at   INTEGER NOT NULL,
    FOREIGN KEY (id, active_server_certificate) REFERENCES server_certificates (org, id)
);
CREATE INDEX orgs_page ON orgs (created_at, id);

CREATE TABLE ca_certificates (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    der                BLOB NOT NULL,
    subject            TEXT NOT NULL,
    issuer             TEXT NOT NULL,
    serial             TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    not_before         INTEGER NOT NULL,
    not_after          INTEGER NOT NULL,
    common_name        TEXT,
    -- JSON array of lower-case SAN dNSNames.
    dns_names          TEXT NOT NULL DEFAULT '[]',
    description        TEXT NOT NULL DEFAULT '',
    active             INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    registered_at      INTEGER NOT NULL,
    UNIQUE (org, fingerprint_sha256)
);
CREATE INDEX ca_certificates_page ON ca_certificates (org, registered_at, id);

CREATE TABLE server_certificates (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- PEM, leaf first.
    chain_pem          TEXT NOT NULL,
    -- The private key (its format byte, then DER), AAD `server_certificates/<id>/key`.
    key_sealed         BLOB NOT NULL,
    subject            TEXT NOT NULL,
    issuer             TEXT NOT NULL,
    serial             TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    not_before         INTEGER NOT NULL,
    not_after          INTEGER NOT NULL,
    common_name        TEXT,
    -- JSON array of lower-case SAN dNSNames.
    dns_names          TEXT NOT NULL,
    registered_at      INTEGER NOT NULL,
    UNIQUE (org, id),
    UNIQUE (org, fingerprint_sha256)
);
CREATE INDEX server_certificates_page ON server_certificates (org, registered_at, id);

-- One row: the platform CA that issues the default server certificate (and later, signing
-- certificates and generated chains).
CREATE TABLE platform (
    id            INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    ca_der        BLOB NOT NULL,
    -- AAD `platform/1/ca_key`.
    ca_key_sealed BLOB NOT NULL,
    created_at    INTEGER NOT NULL
);
