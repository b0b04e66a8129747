-- Citizen-card login (api/src/auth): audit trail, client-assertion replay guard, platform
-- signing keys, loaded CRLs. None of these are business events; the event log stays the
-- source of truth for subjects, certificates and PPIDs.

-- Every login / token / operator attempt, success or failure. Append-only: the trigger
-- below refuses UPDATE and DELETE (retention is handled by partition/export, not in place).
-- Never holds raw certificates, signatures or tokens: only the certificate's SHA-256.
CREATE TABLE auth_audit (
    id              bigserial PRIMARY KEY,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    occurred_at     timestamptz NOT NULL,
    rp_id           text,
    endpoint        text NOT NULL,
    outcome         text NOT NULL,
    cert_sha256     text,
    correlation_id  uuid NOT NULL,
    client_addr     text
);
CREATE INDEX auth_audit_rp_time ON auth_audit (rp_id, occurred_at);
CREATE INDEX auth_audit_correlation ON auth_audit (correlation_id);

CREATE FUNCTION auth_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'auth_audit is append-only';
END;
$$;
CREATE TRIGGER auth_audit_no_update BEFORE UPDATE OR DELETE OR TRUNCATE ON auth_audit
    FOR EACH STATEMENT EXECUTE FUNCTION auth_audit_append_only();

-- RFC 7523 client-assertion ids already used, kept until the assertion's exp has passed.
CREATE TABLE auth_assertion_jti (
    rp_id       text NOT NULL,
    jti         text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (rp_id, jti)
);
CREATE INDEX auth_assertion_jti_expiry ON auth_assertion_jti (expires_at);

-- The platform's token-signing keys. The newest unretired key signs; retired keys stay
-- published in the JWKS until every token they signed has expired.
CREATE TABLE auth_signing_key (
    kid            text PRIMARY KEY,
    alg            text NOT NULL CHECK (alg IN ('ES256', 'RS256')),
    private_pkcs8  bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    retired_at     timestamptz
);

-- CRLs as loaded by an operator (endpoint or CLI); every server instance reloads new rows.
CREATE TABLE auth_crl (
    id           bigserial PRIMARY KEY,
    ca_key_id    text NOT NULL,
    issuer       text NOT NULL,
    this_update  timestamptz NOT NULL,
    next_update  timestamptz NOT NULL,
    der          bytea NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    loaded_by    text NOT NULL
);
CREATE INDEX auth_crl_ca ON auth_crl (ca_key_id, this_update);
