-- Operators pause claims for every replica at once, and each action is recorded.
--
-- While listener.claims_pause holds its one row, no replica claims: the claim statement
-- itself asks for no rows (runtime query claim_jobs), so a replica that has not heard of the
-- pause yet claims nothing either. Rows wait `pending`; rows in flight go on to their end.
-- Deleting the row resumes claims (and `listener resume` wakes every replica at once).
CREATE TABLE IF NOT EXISTS listener.claims_pause (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    paused_by text NOT NULL,
    reason text,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Every operator action: who (`cli`, or a dashboard session), what, when, how many rows.
-- In the listener schema, out of reach of the app's roles.
CREATE TABLE IF NOT EXISTS listener.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb,
    rows integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS audit_at_idx ON listener.audit (at DESC);
