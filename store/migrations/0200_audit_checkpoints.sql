-- Signed checkpoints of the event log (api/src/audit, store/src/checkpoint.rs): the server's
-- Ed25519 checkpoint keys and the checkpoints it signed, as C2SP signed notes. Both tables are
-- append-only: a key is never retired in place (a key is valid from its created_at until the
-- next key's created_at), so an old checkpoint stays verifiable with the key listed for it.

CREATE TABLE audit_checkpoint_key (
    id             bigserial   PRIMARY KEY,
    -- The C2SP key name (the checkpoint origin) and key id (hex, 4 bytes).
    name           text        NOT NULL,
    key_id         text        NOT NULL CHECK (key_id ~ '^[0-9a-f]{8}$'),
    public_key     bytea       NOT NULL CHECK (octet_length(public_key) = 32),
    -- PKCS#8, sealed with MYKEY_KEY_ENCRYPTION_KEY_FILE when set (api/src/auth/keywrap.rs).
    private_pkcs8  bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (name, key_id)
);

CREATE TABLE audit_checkpoint (
    id          bigserial   PRIMARY KEY,
    -- Tree size = the global position the checkpoint covers; hash = that event's hash.
    size        bigint      NOT NULL CHECK (size >= 0),
    hash        bytea       NOT NULL CHECK (octet_length(hash) = 32),
    signed_at   timestamptz NOT NULL,
    key_serial  bigint      NOT NULL REFERENCES audit_checkpoint_key (id),
    -- The whole signed note, byte for byte as served.
    note        text        NOT NULL
);
CREATE INDEX audit_checkpoint_size ON audit_checkpoint (size);

-- mykey_refuse_change() comes from 0001_events.sql.
CREATE TRIGGER audit_checkpoint_key_refuse_update_delete BEFORE UPDATE OR DELETE
    ON audit_checkpoint_key FOR EACH ROW EXECUTE FUNCTION mykey_refuse_change();
CREATE TRIGGER audit_checkpoint_key_refuse_truncate BEFORE TRUNCATE
    ON audit_checkpoint_key FOR EACH STATEMENT EXECUTE FUNCTION mykey_refuse_change();
CREATE TRIGGER audit_checkpoint_refuse_update_delete BEFORE UPDATE OR DELETE
    ON audit_checkpoint FOR EACH ROW EXECUTE FUNCTION mykey_refuse_change();
CREATE TRIGGER audit_checkpoint_refuse_truncate BEFORE TRUNCATE
    ON audit_checkpoint FOR EACH STATEMENT EXECUTE FUNCTION mykey_refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_checkpoint_key, audit_checkpoint FROM PUBLIC;

-- The runtime role may only read and append. It may not exist yet (another migration creates
-- it too): create it here if missing, ignoring a concurrent creation. An owner without
-- CREATEROLE cannot create it; then the grants wait for whoever creates the role.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mykey_runtime') THEN
        BEGIN
            CREATE ROLE mykey_runtime NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation OR insufficient_privilege THEN
            NULL;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mykey_runtime') THEN
        GRANT SELECT, INSERT ON audit_checkpoint_key, audit_checkpoint TO mykey_runtime;
        GRANT USAGE ON SEQUENCE audit_checkpoint_key_id_seq, audit_checkpoint_id_seq
            TO mykey_runtime;
    END IF;
END
$$;
