-- Telling the owner, once: which replica is sending a finished row's news right now (a
-- claim with a lease, so that a crashed replica's work is taken up by another), how many
-- times it was tried, and what came of it. Touches listener.jobs only, no app table.

ALTER TABLE listener.jobs
    -- A unique id per attempt, not the replica's name: a stale attempt can never mark a later one.
    ADD COLUMN IF NOT EXISTS push_owner text,
    ADD COLUMN IF NOT EXISTS push_lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS push_attempts integer NOT NULL DEFAULT 0,
    -- With push_sent_at (when the push step ended): sent, no_tokens, disabled, off,
    -- dead_tokens, config_error, gave_up, retry (released for a later sweep), predates_push.
    ADD COLUMN IF NOT EXISTS push_result text;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'listener.jobs'::regclass AND conname = 'jobs_push_lease_check'
    ) THEN
        ALTER TABLE listener.jobs ADD CONSTRAINT jobs_push_lease_check
            CHECK ((push_owner IS NULL) = (push_lease_expires_at IS NULL));
    END IF;
END
$$;

-- A job set back to pending (the owner's retry) starts its push from nothing as well:
-- an attempt still under way for the earlier round loses its claim and writes nothing.
CREATE OR REPLACE FUNCTION listener.reset_push() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.push_owner := NULL;
    NEW.push_lease_expires_at := NULL;
    NEW.push_attempts := 0;
    NEW.push_result := NULL;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS listener_reset_push ON listener.jobs;
CREATE TRIGGER listener_reset_push
    BEFORE UPDATE ON listener.jobs
    FOR EACH ROW WHEN (OLD.finished_at IS NOT NULL AND NEW.finished_at IS NULL)
    EXECUTE FUNCTION listener.reset_push();

REVOKE ALL ON FUNCTION listener.reset_push() FROM PUBLIC;

-- Rows that finished before pushes existed are not announced now, perhaps days late.
UPDATE listener.jobs SET push_sent_at = finished_at, push_result = 'predates_push'
WHERE outcome IN ('completed', 'failed') AND push_sent_at IS NULL;
