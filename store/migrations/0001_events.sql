-- The event log. Rows are only ever inserted: see 0002 for the triggers that refuse the rest.
--
-- global_position is assigned by the writer while it holds the append advisory lock (not by a
-- sequence): a sequence hands out numbers outside the transaction, so a rolled-back append
-- would leave a gap, and concurrent commits could become visible out of position order.
CREATE TABLE events (
    global_position bigint      PRIMARY KEY CHECK (global_position >= 1),
    stream_id       text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL UNIQUE,
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 0),
    -- text, not jsonb: the hash chain covers these exact bytes, and jsonb re-formats them.
    payload         text        NOT NULL,
    actor_id        text        NOT NULL,
    actor_role      text        NOT NULL,
    command_id      uuid        NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid        NOT NULL,
    patch_id        uuid,
    client_addr     text,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (octet_length(hash) = 32),
    -- Optimistic concurrency: two appends can never both write version n of a stream. It also
    -- serves read_stream and the "current version" lookup (max(stream_version) per stream).
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
);

-- Idempotency: one row per command that was appended, written in the same transaction as its
-- events, holding the outcome returned to the first caller (a retry gets the same answer).
CREATE TABLE commands (
    command_id     uuid        PRIMARY KEY,
    first_position bigint      NOT NULL,
    last_position  bigint      NOT NULL CHECK (last_position >= first_position),
    -- [{"stream": ..., "first_version": ..., "last_version": ...}] in request order.
    streams        jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL
);
