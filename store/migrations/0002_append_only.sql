-- Append-only, for everyone: the table owner (the application role that ran the migrations)
-- bypasses GRANT/REVOKE, so privileges alone would not stop it. A trigger stops the owner too;
-- only a superuser who deliberately disables triggers (session_replication_role = replica, or
-- ALTER TABLE ... DISABLE TRIGGER) can tamper, and the hash chain then reports where.
CREATE FUNCTION mykey_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'mykey: % on % is refused: the event log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION mykey_refuse_change();
CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION mykey_refuse_change();
CREATE TRIGGER commands_refuse_update_delete BEFORE UPDATE OR DELETE ON commands
    FOR EACH ROW EXECUTE FUNCTION mykey_refuse_change();
CREATE TRIGGER commands_refuse_truncate BEFORE TRUNCATE ON commands
    FOR EACH STATEMENT EXECUTE FUNCTION mykey_refuse_change();

-- Other roles (readers such as projections or auditors) get no way to change rows either.
REVOKE UPDATE, DELETE, TRUNCATE ON events, commands FROM PUBLIC;
