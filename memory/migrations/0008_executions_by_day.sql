-- Executions partitioned by the day they started (UTC), so that retention by age drops whole
-- days instead of deleting rows one by one. Writers make each day's partition before they
-- record its first execution (`executions_YYYYMMDD`); rows of a day without one (those kept
-- from before this migration, say) are in `executions_default`. The primary key holds the
-- partition key, as PostgreSQL requires: an execution keeps its start time, so (id, started_at)
-- is as unique as id was.
ALTER TABLE executions RENAME TO executions_unpartitioned;
ALTER INDEX executions_pkey RENAME TO executions_unpartitioned_pkey;
ALTER INDEX executions_signal RENAME TO executions_unpartitioned_signal;
ALTER INDEX executions_shape RENAME TO executions_unpartitioned_shape;
ALTER INDEX executions_started RENAME TO executions_unpartitioned_started;

CREATE TABLE executions (LIKE executions_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (started_at);
ALTER TABLE executions ADD PRIMARY KEY (id, started_at);
CREATE INDEX executions_signal ON executions (signal_id);
CREATE INDEX executions_shape ON executions (shape_id, started_at DESC);
CREATE INDEX executions_started ON executions (started_at DESC, id DESC);
CREATE TABLE executions_default PARTITION OF executions DEFAULT;

INSERT INTO executions SELECT * FROM executions_unpartitioned;
DROP TABLE executions_unpartitioned;
