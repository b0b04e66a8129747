-- The Kafka relay's published position (projections/src/kafka): the highest global position
-- such that the broker has acknowledged every event up to it. One row per topic prefix (a
-- relay publishing the log under another prefix starts from the beginning). The relay that
-- holds the leadership advisory lock advances it, and only forwards (GREATEST), so a relay
-- that lost its lock without noticing can never move it back.
CREATE TABLE relay_position (
    topic_prefix text        PRIMARY KEY,
    position     bigint      NOT NULL CHECK (position >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The runtime role may not exist yet (another migration creates it). Roles are cluster-wide and
-- the migrating owner may lack CREATEROLE: look first, create only when missing and allowed, and
-- grant whenever the role exists. Where it cannot be created here, whoever creates it later
-- grants SELECT, INSERT, UPDATE on relay_position.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mykey_runtime') THEN
        BEGIN
            CREATE ROLE mykey_runtime NOLOGIN;
        EXCEPTION
            WHEN duplicate_object THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'mykey_runtime does not exist and cannot be created here: relay_position not granted';
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'mykey_runtime') THEN
        GRANT SELECT, INSERT, UPDATE ON relay_position TO mykey_runtime;
    END IF;
END
$$;
