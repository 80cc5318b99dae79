-- What the dashboard reads, found through indexes: each read walks at most its time window,
-- newest first, and stops at its LIMIT. The claim and the writes of a row's life neither
-- read nor wait for these indexes; a new job adds one entry to each.

-- The generations of a window, newest request first, page after page (keyset on both columns).
CREATE INDEX IF NOT EXISTS jobs_requested_idx ON listener.jobs (enqueued_at, model_id);

-- One user's generations of a window: a user is found by the first characters of their id,
-- which is a range of this index.
CREATE INDEX IF NOT EXISTS jobs_requested_by_user_idx ON listener.jobs (user_id, enqueued_at, model_id);

-- The rows that ended in a window: per hour, their durations, why they failed.
CREATE INDEX IF NOT EXISTS jobs_finished_idx ON listener.jobs (finished_at) WHERE finished_at IS NOT NULL;
