-- One place where a job ends as completed or failed: listener.end_job marks it finished
-- and clears its lease, but only while it is still the caller's to end. The statements
-- that complete, fail and give up a row (listener/queries.sql) call it and write the
-- row's own columns in the same statement, so the job and the row end together.
--
-- holder: the replica whose lease must be held; NULL for a job whose lease has lapsed
-- (or was never taken), which is how the give-up sweep ends what dead replicas left.
CREATE OR REPLACE FUNCTION listener.end_job(target uuid, holder text, ending text)
RETURNS TABLE (model_id uuid, attempts integer)
LANGUAGE sql VOLATILE ROWS 1 SET search_path = ''
AS $$
    UPDATE listener.jobs j SET
        finished_at = now(), outcome = ending, lease_owner = NULL, lease_expires_at = NULL
    WHERE j.model_id = target
      AND j.finished_at IS NULL
      AND CASE
              WHEN holder IS NULL THEN j.lease_expires_at IS NULL OR j.lease_expires_at <= now()
              ELSE j.lease_owner = holder
          END
    RETURNING j.model_id, j.attempts;
$$;

REVOKE ALL ON FUNCTION listener.end_job(uuid, text, text) FROM PUBLIC;
