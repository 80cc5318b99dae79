-- What an app user may ask of the listener, enforced by the database, where no client can
-- get around it: how many of their rows may wait or run at once, how many requests a day,
-- how long the texts of a request may be, and which columns are the listener's alone.
-- The limits are functions an operator replaces, as listener.job_priority().

-- Who counts as an app user: PostgREST's `anon` and `authenticated`, and any other role a
-- request reaches through the API (it carries JWT claims), but never `service_role`.
CREATE OR REPLACE FUNCTION listener.acting_as_app_user() RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN coalesce(nullif(current_setting('role', true), 'none'), session_user::text) = 'service_role'
            THEN false
        WHEN current_setting('role', true) IN ('anon', 'authenticated')
             OR session_user::text IN ('anon', 'authenticated')
            THEN true
        ELSE coalesce(current_setting('request.jwt.claims', true), '') NOT IN ('', '{}')
             OR coalesce(current_setting('request.jwt.claim.role', true), '') NOT IN ('', 'service_role')
    END
$$;

-- How many of a user's rows may be pending or processing at once.
CREATE OR REPLACE FUNCTION listener.max_unfinished_per_user(user_id uuid) RETURNS integer
LANGUAGE sql STABLE
AS $$ SELECT 10 $$;

-- How many requests (new rows and retries) a user may make in 24 hours; NULL: no limit.
CREATE OR REPLACE FUNCTION listener.max_requests_per_day(user_id uuid) RETURNS integer
LANGUAGE sql STABLE
AS $$ SELECT NULL::integer $$;

-- Every request the listener took on: a row inserted as pending, or set back to pending.
-- Kept when the row is deleted, so that deleting a failed row and inserting it again with
-- the same id neither resets its retry budget nor escapes the daily limit.
CREATE TABLE IF NOT EXISTS listener.requests (
    model_id uuid NOT NULL,
    user_id uuid NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS requests_by_user_idx ON listener.requests (user_id, requested_at);
CREATE INDEX IF NOT EXISTS requests_by_model_idx ON listener.requests (model_id);

-- The jobs that exist already count as requests: one each, and one per retry.
INSERT INTO listener.requests (model_id, user_id, requested_at)
SELECT j.model_id, j.user_id, j.enqueued_at
FROM listener.jobs j CROSS JOIN LATERAL generate_series(0, j.owner_retries)
WHERE NOT EXISTS (SELECT 1 FROM listener.requests r WHERE r.model_id = j.model_id);

-- A user's unfinished jobs, and their waiting ones in claim order (the claim reads a
-- bounded number per user from here, however long one user's backlog is).
CREATE INDEX IF NOT EXISTS jobs_unfinished_by_user_idx
    ON listener.jobs (user_id, priority DESC, enqueued_at) WHERE finished_at IS NULL;

-- Refuses a request an app user may not make; the message is what supabase-js shows.
CREATE OR REPLACE FUNCTION listener.check_request(m public.ai_generated_models)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    most integer;
    made integer;
BEGIN
    IF length(m.prompt) > 2000 THEN
        RAISE EXCEPTION 'the prompt is too long: % characters, the most is 2000', length(m.prompt)
            USING ERRCODE = 'check_violation';
    END IF;
    IF length(m.source_image_url) > 2048 THEN
        RAISE EXCEPTION 'source_image_url is too long: % characters, the most is 2048', length(m.source_image_url)
            USING ERRCODE = 'check_violation';
    END IF;
    IF length(m.art_style) > 50 THEN
        RAISE EXCEPTION 'art_style is too long: % characters, the most is 50', length(m.art_style)
            USING ERRCODE = 'check_violation';
    END IF;
    IF length(m.model_name) > 200 THEN
        RAISE EXCEPTION 'model_name is too long: % characters, the most is 200', length(m.model_name)
            USING ERRCODE = 'check_violation';
    END IF;

    -- One request of a user at a time past this point, so that two at once cannot both
    -- take the last free place.
    PERFORM pg_advisory_xact_lock(hashtextextended('listener.requests:' || m.user_id::text, 0));

    most := listener.max_unfinished_per_user(m.user_id);
    IF most IS NOT NULL THEN
        SELECT count(*) INTO made FROM (
            SELECT 1 FROM listener.jobs j
            WHERE j.user_id = m.user_id AND j.finished_at IS NULL AND j.model_id <> m.id
            LIMIT most
        ) unfinished;
        IF made >= most THEN
            RAISE EXCEPTION 'you already have % models waiting or being generated, the most allowed; wait until one is done', made
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;

    most := listener.max_requests_per_day(m.user_id);
    IF most IS NOT NULL THEN
        SELECT count(*) INTO made FROM (
            SELECT 1 FROM listener.requests r
            WHERE r.user_id = m.user_id AND r.requested_at > now() - interval '24 hours'
            LIMIT most
        ) today;
        IF made >= most THEN
            RAISE EXCEPTION 'you have asked for % models in the last 24 hours, the most allowed; try again later', made
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;

    -- A model id asked for before (a retry, or a deleted row inserted again) spends the
    -- retries of that id.
    SELECT count(*) - 1 INTO made FROM listener.requests r WHERE r.model_id = m.id;
    IF made >= listener.max_owner_retries() THEN
        RAISE EXCEPTION 'model % was already retried % times, the most allowed', m.id, made
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION listener.guard_model_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    job listener.jobs;
    has_job boolean;
BEGIN
    IF NOT listener.acting_as_app_user() THEN
        RETURN NEW;
    END IF;

    IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'pending' THEN
            PERFORM listener.check_request(NEW);
            RETURN listener.clear_results(NEW);
        END IF;
        IF NEW.progress <> 0 OR NEW.error_message IS NOT NULL OR NEW.completed_at IS NOT NULL THEN
            RAISE EXCEPTION 'progress, error_message and completed_at are written by the listener only'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;

    IF NEW.progress IS DISTINCT FROM OLD.progress
       OR NEW.error_message IS DISTINCT FROM OLD.error_message
       OR NEW.completed_at IS DISTINCT FROM OLD.completed_at THEN
        RAISE EXCEPTION 'progress, error_message and completed_at are written by the listener only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    SELECT * INTO job FROM listener.jobs j WHERE j.model_id = OLD.id;
    -- Rows without a job belong to the app's older paths: only the last rule applies to them.
    has_job := FOUND;
    IF has_job AND job.finished_at IS NULL THEN
        IF NEW.status = 'cancelled'
           AND to_jsonb(NEW) - 'status' - 'updated_at' = to_jsonb(OLD) - 'status' - 'updated_at' THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'model % is being generated; the only change allowed now is cancelling it (status = cancelled)', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    -- What the listener produced is the listener's to write, whatever the row's status now.
    IF has_job AND NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed' THEN
        RAISE EXCEPTION 'only the listener marks a model completed'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF has_job AND (
        NEW.storage_path IS DISTINCT FROM OLD.storage_path
        OR NEW.download_url IS DISTINCT FROM OLD.download_url
        OR NEW.stl_storage_path IS DISTINCT FROM OLD.stl_storage_path
        OR NEW.stl_download_url IS DISTINCT FROM OLD.stl_download_url
        OR NEW.thumbnail_url IS DISTINCT FROM OLD.thumbnail_url
        OR NEW.file_size IS DISTINCT FROM OLD.file_size
        OR NEW.model_dimensions IS DISTINCT FROM OLD.model_dimensions
    ) THEN
        RAISE EXCEPTION 'the files of model % are written by the listener only', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    IF NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending' THEN
        IF OLD.status IS DISTINCT FROM 'failed' THEN
            RAISE EXCEPTION 'only a failed model can be set back to pending'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        PERFORM listener.check_request(NEW);
        RETURN listener.clear_results(NEW);
    END IF;

    RETURN NEW;
END
$$;

-- Every request is logged as it is taken on; then, as before, the job and the NOTIFY.
CREATE OR REPLACE FUNCTION listener.enqueue_model() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
    INSERT INTO listener.requests (model_id, user_id) VALUES (NEW.id, NEW.user_id);
    IF TG_OP = 'INSERT' THEN
        INSERT INTO listener.jobs (model_id, user_id, priority)
        VALUES (NEW.id, NEW.user_id, listener.job_priority(NEW.user_id));
    ELSE
        -- A failed row set back to pending: the same job, from the start.
        INSERT INTO listener.jobs AS j (model_id, user_id, priority, owner_retries)
        VALUES (NEW.id, NEW.user_id, listener.job_priority(NEW.user_id), 1)
        ON CONFLICT (model_id) DO UPDATE SET
            priority = excluded.priority,
            ai_task_id = NULL,
            submitted_at = NULL,
            poll_failures = 0,
            owner_retries = j.owner_retries + 1,
            lease_owner = NULL,
            lease_expires_at = NULL,
            cancel_requested = false,
            enqueued_at = now(),
            claimed_at = NULL,
            finished_at = NULL,
            outcome = NULL,
            notification_written_at = NULL,
            push_sent_at = NULL;
    END IF;
    PERFORM pg_notify('listener_jobs', NEW.id::text);
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION listener.check_request(public.ai_generated_models) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.max_unfinished_per_user(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.max_requests_per_day(uuid) FROM PUBLIC;
