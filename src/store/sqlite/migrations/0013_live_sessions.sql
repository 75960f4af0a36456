-- Portcullis schema, version 13 (DESIGN §12): the live sessions of every node, for the
-- cluster-wide session list, and the node that last saw each device. On SQLite the one node lists
-- its sessions from memory; the table stays empty and keeps the schema one on both engines.

CREATE TABLE live_sessions (
    node_id            TEXT NOT NULL,
    -- The node's own number for the session.
    session            INTEGER NOT NULL,
    org                TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    identity           TEXT NOT NULL,
    ca_id              TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    serial             TEXT NOT NULL,
    protocol           INTEGER NOT NULL,
    peer               TEXT,
    connected_at       INTEGER NOT NULL,
    PRIMARY KEY (node_id, session)
);
CREATE INDEX live_sessions_page ON live_sessions (org, connected_at, client_id);

ALTER TABLE devices ADD COLUMN node TEXT NOT NULL DEFAULT '';
