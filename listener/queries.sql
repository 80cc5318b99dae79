-- The listener's runtime queries, one named block each (`-- name: <name>`).
-- listener/queries.py loads them; Python code refers to them by name.

-- name: migrations_bootstrap
CREATE SCHEMA IF NOT EXISTS listener;
CREATE TABLE IF NOT EXISTS listener.schema_migrations (
    version text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_lock
SELECT pg_advisory_lock(hashtext('listener.migrate'));

-- name: migrations_unlock
SELECT pg_advisory_unlock(hashtext('listener.migrate'));

-- name: migrations_applied
SELECT version, checksum FROM listener.schema_migrations ORDER BY version;

-- name: migrations_record
INSERT INTO listener.schema_migrations (version, checksum) VALUES ($1, $2);

-- name: claim_lock
-- Claims are serialised so that the per-user limit holds across replicas.
SELECT pg_advisory_xact_lock(hashtext('listener.claim'));

-- name: claim_jobs
-- $1 lease owner, $2 how many (free slots), $3 per-user limit, $4 lease seconds.
-- Highest priority first, then oldest; a job whose lease expired is claimable again.
WITH in_flight AS (
    SELECT user_id, count(*) AS n FROM listener.jobs
    WHERE finished_at IS NULL AND lease_expires_at > now()
    GROUP BY user_id
),
ranked AS (
    SELECT j.model_id, j.user_id, j.priority, j.enqueued_at,
           row_number() OVER (PARTITION BY j.user_id ORDER BY j.priority DESC, j.enqueued_at) AS nth
    FROM listener.jobs j
    JOIN public.ai_generated_models m ON m.id = j.model_id AND m.status IN ('pending', 'processing')
    WHERE j.finished_at IS NULL
      AND NOT j.cancel_requested
      AND (j.lease_expires_at IS NULL OR j.lease_expires_at <= now())
),
chosen AS (
    SELECT r.model_id FROM ranked r LEFT JOIN in_flight f USING (user_id)
    WHERE r.nth + coalesce(f.n, 0) <= $3
    ORDER BY r.priority DESC, r.enqueued_at
    LIMIT $2
),
claimed AS (
    UPDATE listener.jobs j SET
        lease_owner = $1,
        lease_expires_at = now() + make_interval(secs => $4),
        attempts = j.attempts + 1,
        claimed_at = now()
    FROM chosen c WHERE j.model_id = c.model_id
    RETURNING j.model_id, j.ai_task_id, j.attempts, j.poll_failures, j.enqueued_at,
              extract(epoch FROM now() - j.submitted_at)::float8 AS submitted_age_s
),
processing AS (
    UPDATE public.ai_generated_models m SET status = 'processing'
    FROM claimed c WHERE m.id = c.model_id AND m.status = 'pending'
)
SELECT c.model_id, c.ai_task_id, c.attempts, c.poll_failures, c.submitted_age_s,
       extract(epoch FROM now() - c.enqueued_at)::float8 AS queued_s,
       m.user_id, m.generation_type, m.prompt, m.source_image_url, m.art_style, m.symmetry_mode,
       m.target_polycount, m.model_name, m.progress
FROM claimed c JOIN public.ai_generated_models m ON m.id = c.model_id;

-- name: renew_leases
-- $1 lease owner, $2 model ids, $3 lease seconds. Returns the jobs still ours to run;
-- a missing id was cancelled, deleted, finished or taken over.
UPDATE listener.jobs SET lease_expires_at = now() + make_interval(secs => $3)
WHERE model_id = ANY($2::uuid[]) AND lease_owner = $1 AND finished_at IS NULL AND NOT cancel_requested
RETURNING model_id;

-- name: release_leases
-- $1 lease owner: hands every unfinished job back at once (shutdown).
UPDATE listener.jobs SET lease_owner = NULL, lease_expires_at = NULL
WHERE lease_owner = $1 AND finished_at IS NULL
RETURNING model_id;

-- name: release_lease
-- $1 model id, $2 lease owner: hands one job back (its coroutine could not go on).
UPDATE listener.jobs SET lease_owner = NULL, lease_expires_at = NULL
WHERE model_id = $1 AND lease_owner = $2 AND finished_at IS NULL;

-- name: record_task_id
-- $1 model id, $2 lease owner, $3 AI task id.
UPDATE listener.jobs SET ai_task_id = $3, submitted_at = now(), poll_failures = 0
WHERE model_id = $1 AND lease_owner = $2 AND finished_at IS NULL
RETURNING model_id;

-- name: forget_task_id
-- $1 model id, $2 lease owner: the AI server no longer knows the task; submit again.
UPDATE listener.jobs SET ai_task_id = NULL, submitted_at = NULL, poll_failures = 0
WHERE model_id = $1 AND lease_owner = $2 AND finished_at IS NULL
RETURNING model_id;

-- name: record_poll_failures
-- $1 model id, $2 lease owner, $3 consecutive failed polls.
UPDATE listener.jobs SET poll_failures = $3
WHERE model_id = $1 AND lease_owner = $2 AND finished_at IS NULL
RETURNING model_id;

-- name: write_progress
-- $1 model id, $2 lease owner, $3 progress. Never lowers it; only while the job is ours.
UPDATE public.ai_generated_models m SET progress = $3
FROM listener.jobs j
WHERE m.id = $1 AND j.model_id = m.id AND j.lease_owner = $2 AND j.finished_at IS NULL
  AND m.progress < $3
RETURNING m.id;

-- name: complete_job
-- $1 model id, $2 lease owner, then the result columns. Ends the job and the row together.
WITH job AS (
    UPDATE listener.jobs SET
        finished_at = now(), outcome = 'completed', lease_owner = NULL, lease_expires_at = NULL
    WHERE model_id = $1 AND lease_owner = $2 AND finished_at IS NULL
    RETURNING model_id
)
UPDATE public.ai_generated_models m SET
    status = 'completed',
    progress = 100,
    storage_path = $3,
    download_url = $4,
    file_size = $5,
    file_format = 'glb',
    stl_storage_path = $6,
    stl_download_url = $7,
    thumbnail_url = $8,
    model_dimensions = $9::jsonb,
    generation_metadata = coalesce(m.generation_metadata, '{}'::jsonb) || $10::jsonb,
    error_message = NULL,
    completed_at = now()
FROM job WHERE m.id = job.model_id
RETURNING m.id, m.user_id, m.model_name, m.status, m.error_message;

-- name: fail_job
-- $1 model id, $2 lease owner, $3 the reason a person reads, $4 metadata to keep (the AI task).
WITH job AS (
    UPDATE listener.jobs SET
        finished_at = now(), outcome = 'failed', lease_owner = NULL, lease_expires_at = NULL
    WHERE model_id = $1 AND lease_owner = $2 AND finished_at IS NULL
    RETURNING model_id
)
UPDATE public.ai_generated_models m SET
    status = 'failed',
    error_message = $3,
    generation_metadata = coalesce(m.generation_metadata, '{}'::jsonb) || $4::jsonb
FROM job WHERE m.id = job.model_id
RETURNING m.id, m.user_id, m.model_name, m.status, m.error_message;
