-- Portcullis schema, version 4: every certificate resource has an alias (the operator's short
-- name; by default the subject CN, else the subject).

ALTER TABLE ca_certificates ADD COLUMN alias TEXT NOT NULL DEFAULT '';
UPDATE ca_certificates SET alias = COALESCE(common_name, subject);
ALTER TABLE server_certificates ADD COLUMN alias TEXT NOT NULL DEFAULT '';
UPDATE server_certificates SET alias = COALESCE(common_name, subject);
