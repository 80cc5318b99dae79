-- The files of a row cancelled while no replica runs it are removed all the same.
--
-- A replica removes what it uploaded when the row it runs is cancelled or fails. But a
-- row can be cancelled while no replica runs it, after one uploaded its files: that
-- replica was killed, or handed the row back while the database was away, before it could
-- mark the row completed. Nobody would remove those files. Now the cancel marks the job
-- when the AI server was asked for a model (only then can files exist), and the replicas'
-- sweep removes the files at the row's paths and clears the mark (a file that is not there
-- is no error).
ALTER TABLE listener.jobs ADD COLUMN IF NOT EXISTS files_to_remove boolean NOT NULL DEFAULT false;

-- The sweep reads only the marked jobs.
CREATE INDEX IF NOT EXISTS jobs_files_to_remove_idx ON listener.jobs (model_id) WHERE files_to_remove;

CREATE OR REPLACE FUNCTION listener.cancel_model() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    target uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END;
BEGIN
    UPDATE listener.jobs SET
        cancel_requested = true,
        finished_at = now(),
        outcome = 'cancelled',
        lease_owner = NULL,
        lease_expires_at = NULL,
        files_to_remove = ai_task_id IS NOT NULL
    WHERE model_id = target AND finished_at IS NULL;
    IF FOUND THEN
        PERFORM pg_notify('listener_cancels', target::text);
    END IF;
    RETURN NULL;
END
$$;
