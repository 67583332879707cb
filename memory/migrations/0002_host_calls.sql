-- How each execution used the host's capabilities: one JSON object per capability used
-- (`HostCalls`: capability, calls, errors, denied, micros).
ALTER TABLE executions ADD COLUMN host_calls jsonb NOT NULL DEFAULT '[]'::jsonb;
