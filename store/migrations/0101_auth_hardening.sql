-- Login hardening (issue 8, api/src/auth): challenges that any instance can check, and
-- aggregated counters for unauthenticated refusals.

-- The key every instance MACs challenges with (created by the first instance to start; sealed
-- with MYKEY_KEY_ENCRYPTION_KEY_FILE when one is configured, like the signing keys).
CREATE TABLE auth_challenge_key (
    id          smallint PRIMARY KEY CHECK (id = 1),
    secret      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Challenge ids presented at a login: single use across instances (the primary key decides a
-- race). Pruned once the challenge has expired, like auth_assertion_jti.
CREATE TABLE auth_challenge_used (
    id          uuid PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX auth_challenge_used_expiry ON auth_challenge_used (expires_at);

-- Refusals of callers that did not authenticate (no valid client assertion, access token or
-- operator token): one counter per minute, endpoint and code instead of one auth_audit row
-- each, so nobody can grow the audit trail without credentials.
CREATE TABLE auth_refusal_count (
    minute    timestamptz NOT NULL,
    endpoint  text NOT NULL,
    outcome   text NOT NULL,
    count     bigint NOT NULL CHECK (count > 0),
    PRIMARY KEY (minute, endpoint, outcome)
);
