-- Cluster state (DESIGN §12): the nodes sharing this database, each with its heartbeat; and the
-- notification that tells every node an org's live configuration changed.

CREATE TABLE nodes (
    node_id    TEXT PRIMARY KEY NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    sessions   BIGINT NOT NULL,
    version    TEXT NOT NULL
);

-- NOTIFY portcullis_org, '<org id>' from every write to a table the registry's snapshot of an org
-- is built from (`org_state`). A trigger runs inside the writing transaction, so the notification
-- is sent when, and only when, the change commits, whichever query made it; PostgreSQL folds
-- duplicates within one transaction.
CREATE FUNCTION portcullis_org_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed TEXT;
BEGIN
    IF TG_TABLE_NAME = 'orgs' THEN
        IF TG_OP = 'DELETE' THEN changed := OLD.id; ELSE changed := NEW.id; END IF;
    ELSE
        IF TG_OP = 'DELETE' THEN changed := OLD.org; ELSE changed := NEW.org; END IF;
    END IF;
    PERFORM pg_notify('portcullis_org', changed);
    RETURN NULL;
END;
$$;

CREATE TRIGGER orgs_changed AFTER INSERT OR UPDATE OR DELETE ON orgs
    FOR EACH ROW EXECUTE FUNCTION portcullis_org_changed();
CREATE TRIGGER ca_certificates_changed AFTER INSERT OR UPDATE OR DELETE ON ca_certificates
    FOR EACH ROW EXECUTE FUNCTION portcullis_org_changed();
CREATE TRIGGER server_certificates_changed AFTER INSERT OR UPDATE OR DELETE ON server_certificates
    FOR EACH ROW EXECUTE FUNCTION portcullis_org_changed();
CREATE TRIGGER blocked_devices_changed AFTER INSERT OR UPDATE OR DELETE ON blocked_devices
    FOR EACH ROW EXECUTE FUNCTION portcullis_org_changed();
CREATE TRIGGER crls_changed AFTER INSERT OR UPDATE OR DELETE ON crls
    FOR EACH ROW EXECUTE FUNCTION portcullis_org_changed();
