-- Health probes recorded once a minute per server instance (projections::reports::health).
-- The monthly operations report computes availability and incidents from them.
CREATE TABLE ops_health_probe (
    at       timestamptz NOT NULL,
    instance text NOT NULL,
    ok       boolean NOT NULL,
    detail   text NOT NULL,
    PRIMARY KEY (at, instance)
);
-- Append-only like the logs: a recorded probe is a fact the monthly report relies on.
CREATE TRIGGER ops_health_probe_append_only
    BEFORE UPDATE OR DELETE ON ops_health_probe
    FOR EACH ROW EXECUTE FUNCTION mykey_refuse_change();
GRANT SELECT, INSERT ON ops_health_probe TO mykey_runtime;
