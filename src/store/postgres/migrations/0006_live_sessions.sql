-- The live sessions of every node (DESIGN §12), for the cluster-wide session list: each node
-- writes its own behind the connect path. And the node that last saw each device.

CREATE TABLE live_sessions (
    node_id            TEXT NOT NULL,
    -- The node's own number for the session.
    session            BIGINT NOT NULL,
    org                TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    identity           TEXT NOT NULL,
    ca_id              TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL,
    serial             TEXT NOT NULL,
    protocol           BIGINT NOT NULL,
    peer               TEXT,
    connected_at       BIGINT NOT NULL,
    PRIMARY KEY (node_id, session)
);
CREATE INDEX live_sessions_page ON live_sessions (org, connected_at, client_id);

ALTER TABLE devices ADD COLUMN node TEXT NOT NULL DEFAULT '';
