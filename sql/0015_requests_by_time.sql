-- The daily budget's memory (listener.requests) is pruned by the sweep once a request is
-- older than what it keeps; this index lets each prune read only the oldest requests.
CREATE INDEX IF NOT EXISTS requests_by_time_idx ON listener.requests (requested_at);
