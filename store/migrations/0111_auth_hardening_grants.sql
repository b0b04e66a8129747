-- What the runtime role (see 0003) needs on the tables of 0101.
-- The shared challenge key: made once by the first instance, read by every instance.
GRANT SELECT, INSERT ON auth_challenge_key TO mykey_runtime;
-- Used challenge ids: single use is an INSERT; expired ids are pruned.
GRANT SELECT, INSERT, DELETE ON auth_challenge_used TO mykey_runtime;
-- Unauthenticated refusals counted per (minute, endpoint, code): an upserted counter.
GRANT SELECT, INSERT, UPDATE ON auth_refusal_count TO mykey_runtime;
