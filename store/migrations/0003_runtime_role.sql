-- Role separation (tamper-evidence). Migrations run as the owner role (it owns every table, so
-- it could drop or disable the append-only triggers); the server connects as a login role that
-- is a member of the NOLOGIN group role `mykey_runtime`, which may only read and append here.
-- Without that separation the triggers of 0002 stop mistakes, not a compromised server.
--
-- Roles are cluster-wide: several databases on one cluster (tests, staging) share this one.
-- Creating it races between concurrent migrations of different databases (the migration lock
-- is per database), so both "already exists" errors are caught. An owner without CREATEROLE
-- works when an administrator created the role beforehand.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mykey_runtime') THEN
        CREATE ROLE mykey_runtime NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

-- The read-side projections create their own schemas at run time.
DO $$
BEGIN
    EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO mykey_runtime', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO mykey_runtime;

-- The server checks at start that every migration it knows is applied (it applies none).
GRANT SELECT ON schema_migrations TO mykey_runtime;

-- The event log: read and append, nothing else (no UPDATE, DELETE, TRUNCATE, TRIGGER, and
-- not the owner, so no ALTER TABLE ... DISABLE TRIGGER or DROP TRIGGER either).
GRANT SELECT, INSERT ON events, commands TO mykey_runtime;
