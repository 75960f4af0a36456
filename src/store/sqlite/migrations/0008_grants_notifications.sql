-- Portcullis schema, version 8 (DESIGN §11): where a CA's CRL and OCSP answers come from, the
-- access grants on the keys the product signs with for an org, and notifications.

-- NULL: the CRL is only uploaded.
ALTER TABLE ca_certificates ADD COLUMN crl_url TEXT;
-- 'off' | 'soft' | 'hard'.
ALTER TABLE ca_certificates ADD COLUMN ocsp_mode TEXT NOT NULL DEFAULT 'off';
-- NULL: the responder the leaf's Authority Information Access names.
ALTER TABLE ca_certificates ADD COLUMN ocsp_url TEXT;

CREATE TABLE grants (
    id                   TEXT PRIMARY KEY NOT NULL,
    org                  TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- 'ca_certificate' | 'signing_certificate': the table holder_id is in.
    holder_kind          TEXT NOT NULL,
    holder_id            TEXT NOT NULL UNIQUE,
    granted_at           INTEGER NOT NULL,
    expires_at           INTEGER NOT NULL,
    -- Signatures made as of the last write; the running process may have made more, never
    -- more than `reserved`.
    uses                 INTEGER NOT NULL DEFAULT 0,
    -- Uses reserved ahead of spending them: after a crash `uses` restarts from here.
    reserved             INTEGER NOT NULL DEFAULT 0,
    max_uses             INTEGER NOT NULL,
    -- 'active' | 'warning' | 'expired', as last evaluated.
    status               TEXT NOT NULL DEFAULT 'active',
    -- A key imported from PKCS#12: salt (16 bytes) and PBKDF2-HMAC-SHA256 (100,000 rounds) of the
    -- file's passphrase, which a renewal must present again; NULL otherwise.
    passphrase_verifier  BLOB,
    -- The pending renewal challenge: SHA-256 of the code, its deadline, wrong codes so far.
    challenge_sha256     BLOB,
    challenge_expires_at INTEGER,
    challenge_failures   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX grants_page ON grants (org, granted_at, id);

-- A holder's grant goes with it.
CREATE TRIGGER grants_ca_deleted AFTER DELETE ON ca_certificates
BEGIN
    DELETE FROM grants WHERE holder_id = OLD.id;
END;
CREATE TRIGGER grants_signing_deleted AFTER DELETE ON signing_certificates
BEGIN
    DELETE FROM grants WHERE holder_id = OLD.id;
END;

CREATE TABLE notification_settings (
    org                   TEXT PRIMARY KEY NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- JSON array of addresses.
    emails                TEXT NOT NULL,
    webhook_url           TEXT,
    -- Sealed with the master key, like private keys.
    webhook_secret_sealed BLOB,
    updated_at            INTEGER NOT NULL
);

-- One row per notification sent: each (event, object, threshold) at most once a day.
CREATE TABLE notifications_sent (
    org       TEXT NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    event     TEXT NOT NULL,
    object    TEXT NOT NULL,
    threshold TEXT NOT NULL,
    -- UTC date, YYYY-MM-DD.
    day       TEXT NOT NULL,
    sent_at   INTEGER NOT NULL,
    PRIMARY KEY (org, event, object, threshold, day)
);
