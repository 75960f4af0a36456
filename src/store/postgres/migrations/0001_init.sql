-- The PostgreSQL schema: the SQLite schema after its migrations 0001–0008 (sqlite/migrations),
-- with the same tables, columns, constraints and cascades, in PostgreSQL's types: INTEGER there is
-- BIGINT here (times are unix microseconds, flags 0/1, as the shared queries write them), BLOB is
-- BYTEA. A later change is a new numbered file in both directories.

-- SQLite's instr(), which the shared queries use for substring filters.
CREATE FUNCTION instr(haystack TEXT, needle TEXT) RETURNS INTEGER
    LANGUAGE sql IMMUTABLE STRICT AS 'SELECT strpos(haystack, needle)';

CREATE TABLE store_meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value BYTEA NOT NULL
);

CREATE TABLE orgs (
    id                          TEXT PRIMARY KEY NOT NULL,
    name                        TEXT NOT NULL,
    topic_policy                TEXT NOT NULL CHECK (topic_policy IN ('iot-2', 'open')),
    active_server_certificate   TEXT,
    created_at                  BIGINT NOT NULL,
    approval_required_roles     TEXT NOT NULL DEFAULT '[]',
    default_signing_certificate TEXT
);
CREATE INDEX orgs_page ON orgs (created_at, id);

CREATE TABLE ca_certificates (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    der                BYTEA NOT NULL,
    subject            TEXT NOT NULL,
    issuer             TEXT NOT NULL,
    serial             TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    not_before         BIGINT NOT NULL,
    not_after          BIGINT NOT NULL,
    common_name        TEXT,
    dns_names          TEXT NOT NULL DEFAULT '[]',
    description        TEXT NOT NULL DEFAULT '',
    active             BIGINT NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    registered_at      BIGINT NOT NULL,
    key_sealed         BYTEA,
    alias              TEXT NOT NULL DEFAULT '',
    crl_url            TEXT,
    ocsp_mode          TEXT NOT NULL DEFAULT 'off',
    ocsp_url           TEXT,
    UNIQUE (org, fingerprint_sha256)
);
CREATE INDEX ca_certificates_page ON ca_certificates (org, registered_at, id);

CREATE TABLE server_certificates (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    chain_pem          TEXT NOT NULL,
    key_sealed         BYTEA NOT NULL,
    subject            TEXT NOT NULL,
    issuer             TEXT NOT NULL,
    serial             TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    not_before         BIGINT NOT NULL,
    not_after          BIGINT NOT NULL,
    common_name        TEXT,
    dns_names          TEXT NOT NULL,
    registered_at      BIGINT NOT NULL,
    alias              TEXT NOT NULL DEFAULT '',
    UNIQUE (org, id),
    UNIQUE (org, fingerprint_sha256)
);
CREATE INDEX server_certificates_page ON server_certificates (org, registered_at, id);

ALTER TABLE orgs ADD FOREIGN KEY (id, active_server_certificate)
    REFERENCES server_certificates (org, id);

CREATE TABLE platform (
    id            BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    ca_der        BYTEA NOT NULL,
    ca_key_sealed BYTEA NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE signing_certificates (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    alias              TEXT NOT NULL,
    chain_pem          TEXT NOT NULL,
    key_sealed         BYTEA NOT NULL,
    subject            TEXT NOT NULL,
    issuer             TEXT NOT NULL,
    serial             TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    not_before         BIGINT NOT NULL,
    not_after          BIGINT NOT NULL,
    common_name        TEXT,
    dns_names          TEXT NOT NULL,
    registered_at      BIGINT NOT NULL,
    UNIQUE (org, fingerprint_sha256)
);
CREATE INDEX signing_certificates_page ON signing_certificates (org, registered_at, id);

CREATE TABLE tokens (
    id                  TEXT PRIMARY KEY NOT NULL,
    org                 TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('operator', 'approver', 'viewer')),
    status              TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    signing_certificate TEXT,
    created_by          TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL
);
CREATE INDEX tokens_page ON tokens (org, created_at, id);
CREATE INDEX tokens_signing ON tokens (signing_certificate);

CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY NOT NULL,
    org        TEXT NOT NULL,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    actor_role TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT,
    reason     TEXT
);
CREATE INDEX audit_events_page ON audit_events (org, at, id);

CREATE TABLE csrs (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    alias              TEXT NOT NULL,
    common_name        TEXT NOT NULL,
    dns_names          TEXT NOT NULL,
    key_type           TEXT NOT NULL,
    csr_pem            TEXT NOT NULL,
    key_sealed         BYTEA NOT NULL,
    status             TEXT NOT NULL
        CHECK (status IN ('generated', 'pending_approval', 'completed', 'rejected')),
    requested_by_id    TEXT,
    requested_by       TEXT,
    requested_role     TEXT,
    request            TEXT,
    request_reason     TEXT,
    decided_by         TEXT,
    decision_reason    TEXT,
    server_certificate TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX csrs_page ON csrs (org, created_at, id);

CREATE TABLE blocked_devices (
    id                 TEXT PRIMARY KEY NOT NULL,
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    identity           TEXT,
    fingerprint_sha256 TEXT,
    ca_id              TEXT,
    serial             TEXT,
    reason             TEXT NOT NULL DEFAULT '',
    created_by         TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    CHECK (num_nonnulls(identity, fingerprint_sha256, serial) = 1),
    CHECK ((serial IS NULL) = (ca_id IS NULL))
);
CREATE INDEX blocked_devices_page ON blocked_devices (org, created_at, id);

CREATE TABLE crls (
    ca_id       TEXT PRIMARY KEY NOT NULL REFERENCES ca_certificates (id) ON DELETE CASCADE,
    org         TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    der         BYTEA NOT NULL,
    this_update BIGINT NOT NULL,
    next_update BIGINT,
    entries     BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE devices (
    org                TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    identity           TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    ca_id              TEXT NOT NULL,
    serial             TEXT NOT NULL,
    not_after          BIGINT NOT NULL,
    first_seen         BIGINT NOT NULL,
    last_seen          BIGINT NOT NULL,
    PRIMARY KEY (org, identity, fingerprint_sha256)
);
CREATE INDEX devices_page ON devices (org, first_seen, fingerprint_sha256);

CREATE TABLE grants (
    id                   TEXT PRIMARY KEY NOT NULL,
    org                  TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    holder_kind          TEXT NOT NULL,
    holder_id            TEXT NOT NULL UNIQUE,
    granted_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL,
    uses                 BIGINT NOT NULL DEFAULT 0,
    reserved             BIGINT NOT NULL DEFAULT 0,
    max_uses             BIGINT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'active',
    passphrase_verifier  BYTEA,
    challenge_sha256     BYTEA,
    challenge_expires_at BIGINT,
    challenge_failures   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX grants_page ON grants (org, granted_at, id);

-- A key's grant goes with the key (SQLite: the triggers of 0008).
CREATE FUNCTION grants_holder_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM grants WHERE holder_id = OLD.id;
    RETURN OLD;
END
$$;
CREATE TRIGGER grants_ca_deleted AFTER DELETE ON ca_certificates
    FOR EACH ROW EXECUTE FUNCTION grants_holder_deleted();
CREATE TRIGGER grants_signing_deleted AFTER DELETE ON signing_certificates
    FOR EACH ROW EXECUTE FUNCTION grants_holder_deleted();

CREATE TABLE notification_settings (
    org                   TEXT PRIMARY KEY NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    emails                TEXT NOT NULL,
    webhook_url           TEXT,
    webhook_secret_sealed BYTEA,
    updated_at            BIGINT NOT NULL
);

CREATE TABLE notifications_sent (
    org       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    event     TEXT NOT NULL,
    object    TEXT NOT NULL,
    threshold TEXT NOT NULL,
    day       TEXT NOT NULL,
    sent_at   BIGINT NOT NULL,
    PRIMARY KEY (org, event, object, threshold, day)
);
