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

-- The runtime role may not exist yet (another migration creates it); create it here too so
-- the grant never fails, whichever migration runs first.
DO $$
BEGIN
    CREATE ROLE mykey_runtime NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;

GRANT SELECT, INSERT, UPDATE ON relay_position TO mykey_runtime;
