-- Portcullis schema, version 9 (DESIGN §12): the nodes serving from this store, each with its
-- heartbeat. On SQLite there is one node; the table keeps the node list one query on both engines.

CREATE TABLE nodes (
    node_id    TEXT PRIMARY KEY NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    sessions   INTEGER NOT NULL,
    version    TEXT NOT NULL
);
