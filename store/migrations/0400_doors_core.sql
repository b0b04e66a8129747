-- The HTTP doors' shared layer (api/src/http): idempotency keys and the access log.

-- One row per (caller, Idempotency-Key): the claim (status NULL while the command runs), then
-- the first answer, replayed to retries. Pruned after 24 h by the server.
CREATE TABLE idempotency_keys (
    principal    text        NOT NULL,
    key          uuid        NOT NULL,
    request_hash bytea       NOT NULL,
    status       smallint,
    body         jsonb,
    is_problem   boolean     NOT NULL DEFAULT false,
    position     bigint,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    PRIMARY KEY (principal, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
-- Claim, answer, take over an abandoned claim, prune.
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO mykey_runtime;

-- Every request to the public port. Append-only, separate from the event log.
CREATE TABLE access_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL,
    principal      text,
    role           text,
    rp             text,
    route          text        NOT NULL,
    method         text        NOT NULL,
    status         smallint    NOT NULL,
    latency_us     bigint      NOT NULL,
    correlation_id uuid        NOT NULL
);
CREATE INDEX access_log_at ON access_log (at);
CREATE INDEX access_log_principal_at ON access_log (principal, at);

CREATE FUNCTION access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'access_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER access_log_no_change BEFORE UPDATE OR DELETE OR TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_append_only();
-- Read (export) and append, nothing else. The identity column needs no sequence grant for
-- INSERT (GENERATED ALWAYS uses the owner's sequence through the table's default).
GRANT SELECT, INSERT ON access_log TO mykey_runtime;
