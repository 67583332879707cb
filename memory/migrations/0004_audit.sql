-- The audit trail: who changed what the swarm runs (loads, swaps, refusals, enable and disable,
-- quarantine, trust changes, admin HTTP calls). Append-only: a trigger refuses every UPDATE,
-- DELETE and TRUNCATE, so no interface, not even SQL, can rewrite it.
CREATE TABLE audit (
    seq     bigserial PRIMARY KEY,
    at      timestamptz NOT NULL,
    process text NOT NULL,
    actor   text NOT NULL,
    client  text,
    action  text NOT NULL,
    unit    text,
    outcome text NOT NULL,
    detail  text NOT NULL
);
CREATE INDEX audit_by_unit ON audit (unit, seq);

CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % is refused', TG_OP;
END
$$;
CREATE TRIGGER audit_no_update_or_delete BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();
