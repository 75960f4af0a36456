-- Grant uses exact across nodes (DESIGN §11, §12; SQLite's migration 0010). `grants.uses` counts
-- the uses spent and written (or held by a node that is gone), `grants.reserved` is `uses` plus
-- what the live nodes hold, never above `max_uses`, and each node's unspent and unwritten share
-- is a row of `grant_holds`.

CREATE TABLE grant_holds (
    grant_id TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    -- The node holding it: its id from `grant_holders`, the key of the advisory lock it holds
    -- while it lives (`postgres::holder`).
    holder   BIGINT NOT NULL,
    -- Reserved for that node: spent and not yet written, or not yet spent.
    held     BIGINT NOT NULL,
    PRIMARY KEY (grant_id, holder)
);

CREATE SEQUENCE grant_holders AS integer;

-- What the single-process scheme left: a reservation above `uses` after a crash counts as spent.
UPDATE grants SET uses = GREATEST(uses, reserved), reserved = GREATEST(uses, reserved);
