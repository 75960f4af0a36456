-- The cluster's leader (DESIGN §12): the node that last took the leader lock (a session advisory
-- lock on a connection of its own) records itself here, so that every node can list it. One row.

CREATE TABLE leader (
    id      BIGINT PRIMARY KEY NOT NULL CHECK (id = 1),
    node_id TEXT NOT NULL,
    since   BIGINT NOT NULL
);
