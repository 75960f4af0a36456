-- What a dry run needs (DESIGN §13): what a dry run needs to judge another node's live
-- session, or a device of the registry, as the node serving it judges it: every identity its
-- certificate claims, and the other active CAs that vouched for its chain when it connected, each
-- a space-separated list (empty in a row older than these columns: judged by its bound identity
-- and its CA alone).

ALTER TABLE live_sessions ADD COLUMN claims TEXT NOT NULL DEFAULT '';
ALTER TABLE live_sessions ADD COLUMN also_ca_ids TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN claims TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN also_ca_ids TEXT NOT NULL DEFAULT '';
