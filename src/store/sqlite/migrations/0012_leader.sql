-- Portcullis schema, version 10 (DESIGN §12): the node that leads (runs the notifier and the CRL
-- fetches). On SQLite the one node always leads; the table keeps the node list one query on both
-- engines. One row.

CREATE TABLE leader (
    id      INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    node_id TEXT NOT NULL,
    since   INTEGER NOT NULL
);
