-- Every execution the reactor runs, and the embedded shapes of the signals they handled.
CREATE EXTENSION IF NOT EXISTS vector;

-- One row per distinct signal shape (kind + key paths + masked values): many executions share one
-- embedding. `id` is the first 8 bytes of the BLAKE3 hash of `text`.
CREATE TABLE shapes (
    id         bigint PRIMARY KEY,
    kind       text NOT NULL,
    text       text NOT NULL,
    embedding  halfvec(384) NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    -- Refreshed (at most once a minute) whenever a batch uses the shape; compaction removes a
    -- shape only when no execution uses it and it has not been used for an hour.
    last_seen  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shapes_embedding ON shapes USING hnsw (embedding halfvec_cosine_ops);
CREATE INDEX shapes_kind ON shapes (kind);

CREATE TABLE executions (
    id               uuid PRIMARY KEY,
    signal_id        uuid NOT NULL,
    kind             text NOT NULL,
    -- NULL when the signal's shape could not be embedded: remembered, not searchable.
    shape_id         bigint,
    unit             text NOT NULL,
    unit_version     text NOT NULL,
    generation       bigint NOT NULL,
    attempt          integer NOT NULL,
    success          boolean NOT NULL,
    failure_kind     text,
    error            text,
    started_at       timestamptz NOT NULL,
    latency_us       bigint NOT NULL,
    emitted          uuid[] NOT NULL,
    parent_execution uuid,
    policy           text NOT NULL,
    propensity       double precision NOT NULL,
    -- The whole signal as the unit saw it. `json`, not `jsonb`: it keeps any string a unit or
    -- client sent, including ones jsonb refuses (\u0000).
    signal           json NOT NULL
);
CREATE INDEX executions_signal ON executions (signal_id);
CREATE INDEX executions_shape ON executions (shape_id, started_at DESC);
CREATE INDEX executions_started ON executions (started_at DESC, id DESC);
