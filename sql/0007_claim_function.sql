-- Claims in one round trip: the claim lock and the claim run inside one function call.
-- Each statement of a plpgsql function sees what committed before it started, so the
-- query after the lock sees every claim that committed while this one waited for it.

-- The claim's plan rests on the planner's statistics. A burst of inserts into a table the
-- statistics still describe as nearly empty makes it pick nested loops that take seconds
-- per claim; autovacuum would only notice within a minute. So a claim first refreshes the
-- statistics of a table that has more than doubled since they were taken (a cheap check:
-- the file's size against the page count the statistics recorded).
CREATE OR REPLACE FUNCTION listener.refresh_grown_statistics() RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = ''
AS $$
DECLARE
    tbl regclass;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['listener.jobs'::regclass, 'public.ai_generated_models'::regclass] LOOP
        IF pg_relation_size(tbl) / current_setting('block_size')::bigint
           > 2 * greatest((SELECT relpages FROM pg_class WHERE oid = tbl), 0) + 8 THEN
            EXECUTE format('ANALYZE %s', tbl);
        END IF;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION listener.claim_jobs(
    owner text, slots integer, per_user_limit integer, lease_s double precision
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
LANGUAGE plpgsql VOLATILE SET search_path = ''
AS $$
#variable_conflict use_column
BEGIN
    -- Claims are serialised so that the per-user limit holds across replicas.
    PERFORM pg_advisory_xact_lock(hashtext('listener.claim'));
    PERFORM listener.refresh_grown_statistics();
    RETURN QUERY
    WITH ranked AS (
        SELECT j.model_id, j.user_id, j.priority, j.enqueued_at,
               row_number() OVER (PARTITION BY j.user_id ORDER BY j.priority DESC, j.enqueued_at) AS nth
        FROM listener.jobs j
        JOIN public.ai_generated_models m ON m.id = j.model_id AND m.status IN ('pending', 'processing')
        WHERE j.finished_at IS NULL
          AND NOT j.cancel_requested
          AND (j.lease_expires_at IS NULL OR j.lease_expires_at <= now())
    ),
    -- Rows in flight, counted only for the users who have something to claim.
    in_flight AS (
        SELECT j.user_id, count(*) AS n FROM listener.jobs j
        WHERE j.user_id IN (SELECT DISTINCT r.user_id FROM ranked r)
          AND j.finished_at IS NULL AND j.lease_owner IS NOT NULL AND j.lease_expires_at > now()
        GROUP BY j.user_id
    ),
    chosen AS (
        SELECT r.model_id FROM ranked r LEFT JOIN in_flight f ON f.user_id = r.user_id
        WHERE r.nth + coalesce(f.n, 0) <= per_user_limit
        ORDER BY r.priority DESC, r.enqueued_at
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
          AND NOT j.cancel_requested
          AND (j.lease_expires_at IS NULL OR j.lease_expires_at <= now())
        RETURNING j.model_id, j.ai_task_id, j.attempts, j.poll_failures, j.enqueued_at, j.claimed_at,
                  extract(epoch FROM clock_timestamp() - j.submitted_at)::float8 AS submitted_age_s
    ),
    processing AS (
        UPDATE public.ai_generated_models m SET status = 'processing'
        FROM claimed c WHERE m.id = c.model_id AND m.status = 'pending'
    )
    SELECT c.model_id, c.ai_task_id, c.attempts, c.poll_failures, c.submitted_age_s,
           extract(epoch FROM c.claimed_at - c.enqueued_at)::float8,
           m.user_id, m.generation_type::text, m.prompt, m.source_image_url, m.art_style::text,
           m.symmetry_mode::text, m.target_polycount, m.model_name::text, m.progress
    FROM claimed c JOIN public.ai_generated_models m ON m.id = c.model_id;
END
$$;

REVOKE ALL ON FUNCTION listener.claim_jobs(text, integer, integer, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.refresh_grown_statistics() FROM PUBLIC;
