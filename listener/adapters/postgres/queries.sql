-- The listener's runtime queries, one named block each (`-- name: <name>`).
-- listener/adapters/postgres/queries.py loads them; Python code refers to them by name.

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

-- name: migrations_table_exists
SELECT to_regclass('listener.schema_migrations') IS NOT NULL;

-- name: migrations_preflight
-- Why this role may not apply the migrations, or NULL: they alter the app's table, which
-- only its owner (or a member of the owning role) may do, and create a schema.
SELECT CASE
    WHEN to_regclass('public.ai_generated_models') IS NOT NULL AND NOT pg_has_role(
        current_user,
        (SELECT relowner FROM pg_class WHERE oid = to_regclass('public.ai_generated_models')),
        'USAGE'
    ) THEN format(
        '%s does not own public.ai_generated_models (%s does)',
        current_user,
        (SELECT relowner::regrole FROM pg_class WHERE oid = to_regclass('public.ai_generated_models'))
    )
    WHEN to_regnamespace('listener') IS NULL AND NOT has_database_privilege(current_database(), 'CREATE')
        THEN format('%s may not create schemas in the database %s', current_user, current_database())
END;

-- name: realtime_problem
-- Why the apps would not see progress live, or NULL: Supabase Realtime streams the changes
-- of the tables in the publication supabase_realtime, and only the kinds it publishes.
SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime')
        THEN 'the publication supabase_realtime does not exist'
    WHEN NOT (SELECT puballtables OR EXISTS (
            SELECT 1 FROM pg_publication_tables
            WHERE pubname = 'supabase_realtime' AND schemaname = 'public' AND tablename = 'ai_generated_models'
        ) FROM pg_publication WHERE pubname = 'supabase_realtime')
        THEN 'public.ai_generated_models is not in the publication supabase_realtime'
    WHEN NOT (SELECT pubupdate FROM pg_publication WHERE pubname = 'supabase_realtime')
        THEN 'the publication supabase_realtime does not publish updates'
END AS problem;

-- name: migrations_lock_timeout
-- $1 e.g. '3000ms': how long a migration waits for a lock, for this transaction only.
SELECT set_config('lock_timeout', $1, true);

-- name: migrations_lock_holders
-- The sessions holding locks on tables of the app or the listener: what a migrate that could
-- not get its locks names.
SELECT DISTINCT a.pid, a.application_name, a.state,
       extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::float8 AS age_s
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.pid <> pg_backend_pid()
  AND l.relation IN (
      SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname IN ('public', 'listener')
  )
ORDER BY age_s DESC
LIMIT 10;

-- name: ping
-- Whether the database answers at all (readiness, and the wait at start).
SELECT 1;

-- name: listening_channels
-- The channels the LISTEN connection still listens to (checked on a timer).
SELECT pg_listening_channels() AS channel;

-- name: claim_jobs
-- $1 lease owner, $2 how many (free slots), $3 per-user limit, $4 lease seconds, $5 most claims.
-- Highest priority first, then oldest, among jobs without a lease (see release_expired_leases).
-- A job claimed `most claims` times is left to the sweep, which gives it up (give_up_jobs).
-- The function (sql/0013_claim_of_waiting_jobs.sql) takes the claim lock and claims in one call.
-- While claims are paused (listener.claims_pause has its row) it asks for no rows at all.
SELECT * FROM listener.claim_jobs(
    $1, CASE WHEN EXISTS (SELECT 1 FROM listener.claims_pause) THEN 0 ELSE $2 END, $3, $4, $5
);

-- name: give_up_jobs
-- $1 most claims. A job claimed that often without finishing (its replica crashed each
-- time) ends failed instead of being claimed again forever.
WITH job AS (
    SELECT ended.model_id, ended.attempts
    FROM listener.jobs j
    CROSS JOIN LATERAL listener.end_job(j.model_id, NULL, 'failed') AS ended
    WHERE j.finished_at IS NULL
      AND j.attempts >= $1
      AND (j.lease_expires_at IS NULL OR j.lease_expires_at <= now())
)
UPDATE public.ai_generated_models m SET
    status = 'failed',
    error_message = format('The listener could not finish this generation after %s attempts.', job.attempts)
FROM job WHERE m.id = job.model_id
RETURNING m.id, m.user_id, m.model_name, m.status, m.error_message;

-- name: release_expired_leases
-- Hands back the jobs whose lease ran out (their replica died, or lost the database for
-- longer than the lease), so that the claim takes them up again; the claim only reads
-- jobs without a lease. Returns how many, and the seconds until the next lease held runs
-- out (the sweep looks again then: a dead replica's rows wait no longer than their lease).
WITH released AS (
    UPDATE listener.jobs SET lease_owner = NULL, lease_expires_at = NULL
    WHERE finished_at IS NULL AND lease_owner IS NOT NULL AND lease_expires_at <= now()
    RETURNING model_id
)
SELECT (SELECT count(*) FROM released)::int AS released,
       (SELECT extract(epoch FROM min(lease_expires_at) - now())::float8 FROM listener.jobs
        WHERE finished_at IS NULL AND lease_owner IS NOT NULL AND lease_expires_at > now()) AS next_expiry_s;

-- name: forget_old_requests
-- $1 days kept, $2 most rows. The daily budget's memory of requests older than what is
-- kept, pruned a batch at a time (the retries of a model id asked for that long ago are
-- forgotten with it). Returns how many went.
WITH gone AS (
    DELETE FROM listener.requests WHERE ctid IN (
        SELECT ctid FROM listener.requests
        WHERE requested_at < now() - make_interval(days => $1)
        ORDER BY requested_at
        LIMIT $2
    )
    RETURNING 1
)
SELECT count(*)::int FROM gone;

-- name: files_to_remove
-- $1 most. Rows cancelled after the AI server was asked for their model, whose files may
-- be in Storage with no replica left to remove them (sql/0016_files_of_cancelled_rows.sql).
SELECT j.model_id, j.user_id FROM listener.jobs j
WHERE j.files_to_remove AND j.outcome = 'cancelled'
LIMIT $1;

-- name: files_removed
-- $1 model ids whose files are gone.
UPDATE listener.jobs SET files_to_remove = false WHERE model_id = ANY($1::uuid[]);

-- name: renew_leases
-- $1 lease owner, $2 model ids, $3 lease seconds. Returns the jobs still ours to run;
-- a missing id was cancelled, deleted, finished or taken over.
UPDATE listener.jobs SET lease_expires_at = now() + make_interval(secs => $3)
WHERE model_id = ANY($2::uuid[]) AND lease_owner = $1 AND finished_at IS NULL AND NOT cancel_requested
RETURNING model_id;

-- name: release_leases
-- $1 lease owner: hands every unfinished job back at once (shutdown). A claim handed back
-- in good order does not count towards the claims that give a job up.
UPDATE listener.jobs SET lease_owner = NULL, lease_expires_at = NULL, attempts = greatest(attempts - 1, 0)
WHERE lease_owner = $1 AND finished_at IS NULL
RETURNING model_id;

-- name: release_lease
-- $1 model id, $2 lease owner: hands one job back (its coroutine could not go on).
UPDATE listener.jobs SET lease_owner = NULL, lease_expires_at = NULL
WHERE model_id = $1 AND lease_owner = $2 AND finished_at IS NULL;

-- name: job_abandoned
-- $1 model id. True when no replica will complete the row: its job was cancelled or failed,
-- or is gone with the row (a row set back to pending starts a new job round: not abandoned).
SELECT NOT EXISTS (
    SELECT 1 FROM listener.jobs WHERE model_id = $1 AND outcome IS DISTINCT FROM 'cancelled'
      AND outcome IS DISTINCT FROM 'failed'
) AS abandoned;

-- name: record_task_id
-- $1 model id, $2 lease owner, $3 AI task id. Returns whether the job is still ours. The id
-- is stored even when another replica took the job over while the AI server was answering,
-- as long as none is stored yet: the replica that runs the job then polls this generation
-- instead of starting a second one.
UPDATE listener.jobs SET ai_task_id = $3, submitted_at = now(), poll_failures = 0
WHERE model_id = $1 AND finished_at IS NULL AND (lease_owner = $2 OR ai_task_id IS NULL)
RETURNING lease_owner IS NOT DISTINCT FROM $2 AS ours;

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
FROM listener.end_job($1, $2, 'completed') AS job
WHERE m.id = job.model_id
RETURNING m.id, m.user_id, m.model_name, m.status, m.error_message;

-- name: fail_job
-- $1 model id, $2 lease owner, $3 the reason a person reads, $4 metadata to keep (the AI task).
UPDATE public.ai_generated_models m SET
    status = 'failed',
    error_message = $3,
    generation_metadata = coalesce(m.generation_metadata, '{}'::jsonb) || $4::jsonb
FROM listener.end_job($1, $2, 'failed') AS job
WHERE m.id = job.model_id
RETURNING m.id, m.user_id, m.model_name, m.status, m.error_message;

-- Push
-- The once-only news of a finished row: a claim per attempt (with a lease, so that a
-- crashed replica's work is taken up), the notification row with its marker, the
-- device tokens in each shape found in the wild, and the end of the push step.

-- name: push_schema
-- What the app's schema has: the token table's flag column, and the settings table.
SELECT
    to_regclass('public.user_device_tokens') IS NOT NULL AS has_tokens,
    to_regclass('public.user_notification_settings') IS NOT NULL AS has_settings,
    EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass('public.user_device_tokens') AND attname = 'is_active'
          AND attnum > 0 AND NOT attisdropped
    ) AS has_is_active,
    EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = to_regclass('public.user_device_tokens') AND attname = 'push_enabled'
          AND attnum > 0 AND NOT attisdropped
    ) AS has_push_enabled;

-- name: push_claim
-- $1 model id, $2 claim id, $3 lease seconds. Takes one finished row's push unless it is
-- done or another attempt holds it; a row lock makes exactly one of two racing claims win.
UPDATE listener.jobs j SET
    push_owner = $2,
    push_lease_expires_at = now() + make_interval(secs => $3),
    push_attempts = j.push_attempts + 1
FROM public.ai_generated_models m
WHERE j.model_id = $1 AND m.id = j.model_id
  AND j.outcome IN ('completed', 'failed') AND j.push_sent_at IS NULL
  AND (j.push_owner IS NULL OR j.push_lease_expires_at <= now())
RETURNING j.model_id, m.user_id, m.model_name, j.outcome, m.error_message, j.push_attempts,
          j.notification_written_at IS NOT NULL AS notification_written;

-- name: push_claim_unsent
-- $1 claim id, $2 lease seconds, $3 how many, $4 attempts allowed, $5 oldest worth telling (s).
-- The sweep: finished rows whose push no live attempt holds (a replica died, or FCM was down).
WITH due AS (
    SELECT model_id FROM listener.jobs
    WHERE outcome IN ('completed', 'failed') AND push_sent_at IS NULL
      AND (push_owner IS NULL OR push_lease_expires_at <= now())
      AND push_attempts < $4
      AND finished_at > now() - make_interval(secs => $5)
    ORDER BY finished_at
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE listener.jobs j SET
    push_owner = $1,
    push_lease_expires_at = now() + make_interval(secs => $2),
    push_attempts = j.push_attempts + 1
FROM due, public.ai_generated_models m
WHERE j.model_id = due.model_id AND m.id = j.model_id
RETURNING j.model_id, m.user_id, m.model_name, j.outcome, m.error_message, j.push_attempts,
          j.notification_written_at IS NOT NULL AS notification_written;

-- name: push_expire
-- $1 attempts allowed, $2 oldest worth telling (s). Ends what the sweep will no longer try.
UPDATE listener.jobs SET push_sent_at = now(), push_result = 'gave_up'
WHERE outcome IN ('completed', 'failed') AND push_sent_at IS NULL
  AND (push_owner IS NULL OR push_lease_expires_at <= now())
  AND (push_attempts >= $1 OR finished_at <= now() - make_interval(secs => $2))
RETURNING model_id;

-- name: push_write_notification
-- $1 model id, $2 claim id, $3 user id, $4 title, $5 message, $6 message_en, $7 type,
-- $8 metadata. The marker and the row in one statement: both or neither, once.
WITH marked AS (
    UPDATE listener.jobs SET notification_written_at = now()
    WHERE model_id = $1 AND push_owner = $2 AND notification_written_at IS NULL
    RETURNING model_id
)
INSERT INTO public.notifications (user_id, title, message, message_en, type, related_id, related_type, metadata)
SELECT $3, $4, $5, $6, $7, marked.model_id::text, 'ai_model', $8::jsonb FROM marked
RETURNING id;

-- name: push_done
-- $1 model id, $2 claim id, $3 result. Ends the push step, if the claim is still ours.
UPDATE listener.jobs SET
    push_sent_at = now(), push_result = $3, push_owner = NULL, push_lease_expires_at = NULL
WHERE model_id = $1 AND push_owner = $2
RETURNING model_id;

-- name: push_extend
-- $1 model id, $2 claim id, $3 lease seconds. Keeps the claim of an attempt under way alive,
-- so that only the claim of a replica that died runs out.
UPDATE listener.jobs SET push_lease_expires_at = now() + make_interval(secs => $3)
WHERE model_id = $1 AND push_owner = $2
RETURNING model_id;

-- name: push_release
-- $1 model id, $2 claim id. Hands the push back for a later sweep (FCM unreachable now).
UPDATE listener.jobs SET push_result = 'retry', push_owner = NULL, push_lease_expires_at = NULL
WHERE model_id = $1 AND push_owner = $2
RETURNING model_id;

-- name: push_settings
-- $1 user id. The whole row as JSON: the columns differ between versions of the app.
SELECT to_jsonb(s) AS settings FROM public.user_notification_settings s WHERE s.user_id = $1;

-- name: push_tokens_is_active
-- $1 user id.
SELECT DISTINCT device_token FROM public.user_device_tokens
WHERE user_id = $1 AND is_active IS NOT FALSE AND device_token <> '';

-- name: push_tokens_push_enabled
-- $1 user id.
SELECT DISTINCT device_token FROM public.user_device_tokens
WHERE user_id = $1 AND push_enabled IS NOT FALSE AND device_token <> '';

-- name: push_tokens_unflagged
-- $1 user id. A token table without a flag: every row is live.
SELECT DISTINCT device_token FROM public.user_device_tokens
WHERE user_id = $1 AND device_token <> '';

-- name: push_deactivate_is_active
-- $1 user id, $2 dead tokens.
UPDATE public.user_device_tokens SET is_active = false
WHERE user_id = $1 AND device_token = ANY($2::text[]) AND is_active IS NOT FALSE
RETURNING device_token;

-- name: push_deactivate_push_enabled
-- $1 user id, $2 dead tokens.
UPDATE public.user_device_tokens SET push_enabled = false
WHERE user_id = $1 AND device_token = ANY($2::text[]) AND push_enabled IS NOT FALSE
RETURNING device_token;

-- name: push_delete_tokens
-- $1 user id, $2 dead tokens. Where the table has no flag, a dead token goes.
DELETE FROM public.user_device_tokens
WHERE user_id = $1 AND device_token = ANY($2::text[])
RETURNING device_token;

-- Lock-screen progress
-- Where a row's updates go while its app is closed: the Live Activity its iPhone registered,
-- and the Android devices of an owner who turned progress on. Read per update (a few per
-- row), so a token registered after the row started is used from the next update on.

-- name: progress_targets
-- $1 model id, $2 user id. The token table's flag and the settings' columns differ between
-- versions of the app: both are read as JSON, a missing flag meaning active.
SELECT
    ARRAY(
        SELECT DISTINCT t.device_token FROM public.user_device_tokens t
        WHERE t.user_id = $2 AND t.platform = 'android' AND t.device_token <> ''
          AND coalesce((to_jsonb(t) ->> 'is_active')::boolean, (to_jsonb(t) ->> 'push_enabled')::boolean, true)
          AND EXISTS (
              SELECT 1 FROM public.user_notification_settings s
              WHERE s.user_id = $2
                AND coalesce((to_jsonb(s) ->> 'ai_progress_enabled')::boolean, false)
                AND coalesce((to_jsonb(s) ->> 'push_notifications')::boolean, true)
          )
    ) AS android,
    a.activity_token,
    a.device_token AS activity_device_token
FROM (SELECT 1) AS one
LEFT JOIN public.live_activity_tokens a ON a.model_id = $1 AND a.user_id = $2;

-- name: progress_row_cancelled
-- $1 model id. Whether a row whose coroutine stopped here was cancelled by its owner.
SELECT EXISTS (
    SELECT 1 FROM public.ai_generated_models WHERE id = $1 AND status = 'cancelled'
) AS cancelled;

-- name: progress_drop_live_activity
-- $1 model id. FCM called the row's Live Activity dead: nothing more is sent to it.
DELETE FROM public.live_activity_tokens WHERE model_id = $1
RETURNING model_id;

-- Storage
-- The bucket's own limits, where the database is Supabase's (its storage schema).

-- name: storage_buckets_exist
-- True where the table exists and this role may read it (without, the limits stay unknown).
-- Found through the catalog: a name lookup in a schema this role may not use would fail.
SELECT coalesce((
    SELECT has_schema_privilege(n.oid, 'USAGE') AND has_table_privilege(c.oid, 'SELECT')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'storage' AND c.relname = 'buckets'
), false);

-- name: storage_bucket_limits
-- $1 the bucket. NULL limits: none of its own (the project's global limit still holds).
SELECT file_size_limit, allowed_mime_types FROM storage.buckets WHERE id = $1;

-- Status
-- What `listener status` reports, read-only.

-- name: claims_pause
-- $1 who, $2 why. Pauses claims for every replica (or says why again); records it.
WITH paused AS (
    INSERT INTO listener.claims_pause (paused_by, reason) VALUES ($1, $2)
    ON CONFLICT (only_row) DO UPDATE SET paused_by = excluded.paused_by, reason = excluded.reason
    RETURNING paused_by, reason, paused_at
), recorded AS (
    INSERT INTO listener.audit (actor, action, detail) VALUES ($1, 'pause', jsonb_build_object('reason', $2))
)
SELECT * FROM paused;

-- name: claims_resume
-- $1 who. Resumes claims, records it, and wakes every replica; returns the pause it ended.
WITH resumed AS (
    DELETE FROM listener.claims_pause RETURNING paused_by, reason, paused_at
), recorded AS (
    INSERT INTO listener.audit (actor, action, detail)
    SELECT $1, 'resume', jsonb_build_object('paused_by', paused_by, 'reason', reason) FROM resumed
), woken AS (
    SELECT pg_notify('listener_jobs', 'resume') FROM resumed
)
SELECT resumed.* FROM resumed, woken;

-- name: claims_paused
-- The pause in force, if any.
SELECT paused_by, reason, extract(epoch FROM now() - paused_at)::float8 AS paused_s FROM listener.claims_pause;

-- name: status_counts
-- Rows by status: those the listener owns or owned (they have a job), and every row.
SELECT m.status, count(j.model_id) AS owned, count(*) AS total
FROM public.ai_generated_models m LEFT JOIN listener.jobs j ON j.model_id = m.id
GROUP BY m.status
ORDER BY m.status;

-- name: status_in_flight
-- $1 how many. Rows being generated, oldest claim first, with their lease.
SELECT m.id AS model_id, m.model_name, m.user_id, m.progress, j.lease_owner, j.attempts,
       extract(epoch FROM now() - j.enqueued_at)::float8 AS age_s,
       extract(epoch FROM now() - j.claimed_at)::float8 AS running_s,
       extract(epoch FROM j.lease_expires_at - now())::float8 AS lease_left_s
FROM listener.jobs j JOIN public.ai_generated_models m ON m.id = j.model_id
WHERE j.finished_at IS NULL AND m.status = 'processing'
ORDER BY j.claimed_at NULLS LAST, j.enqueued_at
LIMIT $1;

-- name: status_oldest_pending
-- The row that has waited longest for a slot.
SELECT m.id AS model_id, m.model_name, extract(epoch FROM now() - j.enqueued_at)::float8 AS age_s
FROM listener.jobs j JOIN public.ai_generated_models m ON m.id = j.model_id
WHERE j.finished_at IS NULL AND m.status = 'pending'
ORDER BY j.enqueued_at
LIMIT 1;

-- name: status_leases
-- Leases on unfinished jobs per replica; an expired one belongs to a replica that stopped renewing.
SELECT lease_owner, count(*) AS held, count(*) FILTER (WHERE lease_expires_at <= now()) AS expired
FROM listener.jobs
WHERE lease_owner IS NOT NULL AND finished_at IS NULL
GROUP BY lease_owner
ORDER BY lease_owner;
