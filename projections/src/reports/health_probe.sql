-- Health probes recorded once a minute per server instance (projections::reports::health).
-- The monthly operations report computes availability and incidents from them.
-- Runtime role needs: USAGE on schema ops, SELECT and INSERT on ops.health_probe.
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE ops.health_probe (
    at       timestamptz NOT NULL,
    instance text NOT NULL,
    ok       boolean NOT NULL,
    detail   text NOT NULL,
    PRIMARY KEY (at, instance)
);
