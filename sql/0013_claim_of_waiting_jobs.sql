-- The claim again, in three ways cheaper or stricter than sql/0010_bounded_claim.sql (which
-- explains the rest of it).
--
-- Its cost does not grow with the rows in flight. It used to visit every user with
-- unfinished work, and for each read past their rows in flight to find the waiting ones:
-- with 5,000 rows in flight it took 5 ms, and claims queue behind one another on the claim
-- lock. It now visits only the users who have a job waiting (no lease at all), from an
-- index that holds only those, so its cost follows the rows waiting, not the rows running.
-- A lease that ran out (its replica died, or lost the database for longer than the lease)
-- is no longer claimed as it stands: the sweep of every replica hands such jobs back first
-- (release_expired_leases in listener/queries.sql), at start and as each lease runs out,
-- and they are then claimed like any waiting job.
--
-- A job claimed `max_claims` times without finishing is not claimed again: its replicas
-- died with it each time, and the sweep gives it up (fails it with a plain reason)
-- instead. Before, a claim that came before the sweep (the look at start, or after a
-- reconnect) took such a job once more. The new argument has a default, so a replica of
-- the previous version, which passes four, keeps claiming during a rolling upgrade.
--
-- It keeps one plan per connection instead of planning its query at every call. A plpgsql
-- function plans each query of its body with the call's values for the first calls, and
-- keeps a generic plan only if that one does not look dearer; the claim's query never
-- passed that test, so every claim was planned anew: about 0.75 ms of a claim that takes
-- 0.1 ms to run when nothing waits. Its plan walks indexes whatever the values (how many
-- slots, the per-user limit), so one generic plan serves every call. A plan made before a
-- burst is made again after the statistics refresh the claim runs itself
-- (sql/0007_claim_function.sql): ANALYZE invalidates the plans that rest on the table.
CREATE INDEX IF NOT EXISTS jobs_waiting_by_user_idx
    ON listener.jobs (user_id, priority DESC, enqueued_at)
    WHERE finished_at IS NULL AND lease_owner IS NULL;

DROP FUNCTION listener.claim_jobs(text, integer, integer, double precision);

CREATE FUNCTION listener.claim_jobs(
    owner text, slots integer, per_user_limit integer, lease_s double precision,
    max_claims integer DEFAULT 8
)
RETURNS TABLE (
    model_id uuid,
    ai_task_id text,
    attempts integer,
    poll_failures integer,
    submitted_age_s double precision,
    queued_s double precision,
    user_id uuid,
    generation_type text,
    prompt text,
    source_image_url text,
    art_style text,
    symmetry_mode text,
    target_polycount numeric,
    model_name text,
    progress integer
)
LANGUAGE plpgsql VOLATILE
SET search_path = ''
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    -- Claims are serialised so that the per-user limit holds across replicas.
    PERFORM pg_advisory_xact_lock(hashtext('listener.claim'));
    PERFORM listener.refresh_grown_statistics();
    RETURN QUERY
    WITH RECURSIVE users AS (
        (SELECT j.user_id FROM listener.jobs j
         WHERE j.finished_at IS NULL AND j.lease_owner IS NULL ORDER BY j.user_id LIMIT 1)
        UNION ALL
        SELECT (
            SELECT j.user_id FROM listener.jobs j
            WHERE j.finished_at IS NULL AND j.lease_owner IS NULL AND j.user_id > u.user_id
            ORDER BY j.user_id LIMIT 1
        )
        FROM users u WHERE u.user_id IS NOT NULL
    ),
    candidates AS (
        SELECT w.model_id, w.priority, w.enqueued_at
        FROM users u
        CROSS JOIN LATERAL (
            SELECT count(*) AS n FROM listener.jobs f
            WHERE f.user_id = u.user_id AND f.finished_at IS NULL
              AND f.lease_owner IS NOT NULL AND f.lease_expires_at > now()
        ) busy
        CROSS JOIN LATERAL (
            SELECT j.model_id, j.priority, j.enqueued_at
            FROM listener.jobs j
            JOIN public.ai_generated_models m ON m.id = j.model_id AND m.status IN ('pending', 'processing')
            WHERE j.user_id = u.user_id
              AND j.finished_at IS NULL
              AND j.lease_owner IS NULL
              AND NOT j.cancel_requested
              AND j.attempts < max_claims
            ORDER BY j.priority DESC, j.enqueued_at
            LIMIT greatest(per_user_limit - busy.n, 0)
        ) w
        WHERE u.user_id IS NOT NULL
    ),
    chosen AS (
        SELECT c.model_id FROM candidates c
        ORDER BY c.priority DESC, c.enqueued_at
        LIMIT slots
    ),
    claimed AS (
        UPDATE listener.jobs j SET
            lease_owner = owner,
            lease_expires_at = clock_timestamp() + make_interval(secs => lease_s),
            attempts = j.attempts + 1,
            claimed_at = clock_timestamp()
        FROM chosen c
        -- Checked again on the row itself: a cancel or a completion that committed while
        -- this statement waited for the row's lock must not be claimed.
        WHERE j.model_id = c.model_id
          AND j.finished_at IS NULL
          AND j.lease_owner IS NULL
          AND NOT j.cancel_requested
          AND j.attempts < max_claims
        RETURNING j.model_id, j.ai_task_id, j.attempts, j.poll_failures, j.enqueued_at, j.claimed_at,
                  extract(epoch FROM clock_timestamp() - j.submitted_at)::float8 AS submitted_age_s
    ),
    processing AS (
        UPDATE public.ai_generated_models m SET status = 'processing'
        FROM claimed c WHERE m.id = c.model_id AND m.status = 'pending'
    )
    SELECT c.model_id, c.ai_task_id, c.attempts, c.poll_failures, c.submitted_age_s,
           extract(epoch FROM c.claimed_at - c.enqueued_at)::float8,
           m.user_id, m.generation_type::text, substr(m.prompt, 1, 2001), substr(m.source_image_url, 1, 2049),
           substr(m.art_style::text, 1, 51), m.symmetry_mode::text, m.target_polycount,
           substr(m.model_name::text, 1, 201), m.progress
    FROM claimed c JOIN public.ai_generated_models m ON m.id = c.model_id;
END
$$;

REVOKE ALL ON FUNCTION listener.claim_jobs(text, integer, integer, double precision, integer) FROM PUBLIC;
