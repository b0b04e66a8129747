-- What the runtime role (see 0003) needs on the auth tables of 0100.
-- Append-only: the audit trail and the CRLs as loaded.
GRANT SELECT, INSERT ON auth_audit, auth_crl TO mykey_runtime;
GRANT USAGE ON SEQUENCE auth_audit_id_seq, auth_crl_id_seq TO mykey_runtime;
-- Replay guard: ids are pruned once their assertion has expired.
GRANT SELECT, INSERT, DELETE ON auth_assertion_jti TO mykey_runtime;
-- Signing keys: a rotation inserts the new key and stamps retired_at on the old ones.
GRANT SELECT, INSERT ON auth_signing_key TO mykey_runtime;
GRANT UPDATE (retired_at) ON auth_signing_key TO mykey_runtime;
