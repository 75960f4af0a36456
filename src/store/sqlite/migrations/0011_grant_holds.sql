-- Portcullis schema, version 10 (DESIGN §11, §12): grant uses exact across the stores sharing a
-- database. From here `grants.uses` counts the uses spent and written (or held by a store that is
-- gone), `grants.reserved` is `uses` plus what the live stores hold, never above `max_uses`, and
-- each store's unspent and unwritten share is a row of `grant_holds`.

CREATE TABLE grant_holds (
    grant_id TEXT NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    -- The store holding it (`Backend::holder`).
    holder   INTEGER NOT NULL,
    -- Reserved for that store: spent and not yet written, or not yet spent.
    held     INTEGER NOT NULL,
    PRIMARY KEY (grant_id, holder)
);

-- What the single-process scheme left: a reservation above `uses` after a crash counts as spent.
UPDATE grants SET uses = max(uses, reserved), reserved = max(uses, reserved);
