-- The per-user limits hold for a statement of many rows, and for several such statements
-- at once.
--
-- They were checked in the BEFORE ROW trigger, against the jobs and the requests that the
-- AFTER ROW trigger writes. Postgres runs a statement's AFTER ROW triggers only once the
-- statement has written all its rows, so every row of one multi-row INSERT (which is what
-- supabase-js sends for `.insert([...])`) saw the counts from before the statement: with a
-- limit of 5 requests a day, one INSERT of 200 rows went through, and so did one UPDATE
-- that set 30 failed rows back to pending.
--
-- The limits are now checked in the AFTER ROW trigger, right after it writes the row's
-- request and job, under a lock per user: each row counts every row the statement wrote
-- before it, and a second statement of the same user waits for the first to end, then
-- counts its rows too. A statement that goes past a limit fails as a whole, with the same
-- words as before. The BEFORE trigger keeps what needs only the row itself: the lengths of
-- its texts.
--
-- Also here:
-- - only a row whose generation failed may be set back to pending (an owner could set a
--   completed row to failed, then to pending, and have it generated again);
-- - deleting a row tells the replicas only when it ends a job, not for every row deleted.

-- What a request may hold, row by row (the BEFORE trigger).
CREATE OR REPLACE FUNCTION listener.check_request_texts(m public.ai_generated_models)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = ''
AS $$
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
END
$$;

-- How many requests a user may make, counted once this request is written (the AFTER
-- trigger): the counts include this row and every row written before it, in this
-- statement or in statements that committed first.
CREATE OR REPLACE FUNCTION listener.check_request_limits(model_id uuid, user_id uuid)
RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = ''
AS $$
DECLARE
    most integer;
    made integer;
BEGIN
    most := listener.max_unfinished_per_user(user_id);
    IF most IS NOT NULL THEN
        SELECT count(*) INTO made FROM (
            SELECT 1 FROM listener.jobs j
            WHERE j.user_id = check_request_limits.user_id AND j.finished_at IS NULL
            LIMIT most + 1
        ) unfinished;
        IF made > most THEN
            RAISE EXCEPTION 'you already have % models waiting or being generated, the most allowed; wait until one is done', most
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;

    most := listener.max_requests_per_day(user_id);
    IF most IS NOT NULL THEN
        SELECT count(*) INTO made FROM (
            SELECT 1 FROM listener.requests r
            WHERE r.user_id = check_request_limits.user_id AND r.requested_at > now() - interval '24 hours'
            LIMIT most + 1
        ) today;
        IF made > most THEN
            RAISE EXCEPTION 'you have asked for % models in the last 24 hours, the most allowed; try again later', most
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;

    -- A model id asked for before (a retry, or a deleted row inserted again) spends the
    -- retries of that id; this request is the last of its requests.
    SELECT count(*) - 2 INTO made FROM listener.requests r WHERE r.model_id = check_request_limits.model_id;
    IF made >= listener.max_owner_retries() THEN
        RAISE EXCEPTION 'model % was already retried % times, the most allowed', model_id, made
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
            PERFORM listener.check_request_texts(NEW);
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
        -- The row's status is the owner's to write, so it proves nothing: a retry needs a
        -- generation that failed (its job's outcome), or no job at all (the older paths).
        IF OLD.status IS DISTINCT FROM 'failed' OR (has_job AND job.outcome IS DISTINCT FROM 'failed') THEN
            RAISE EXCEPTION 'only a model whose generation failed can be set back to pending'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        PERFORM listener.check_request_texts(NEW);
        RETURN listener.clear_results(NEW);
    END IF;

    RETURN NEW;
END
$$;

-- Every request is logged as it is taken on, its job written, and then, for an app user,
-- the limits checked with this row counted; then the NOTIFY.
CREATE OR REPLACE FUNCTION listener.enqueue_model() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    app_user boolean := listener.acting_as_app_user();
BEGIN
    IF app_user THEN
        -- One statement of a user at a time from here to its commit, so that two at once
        -- cannot both take the last free places.
        PERFORM pg_advisory_xact_lock(hashtextextended('listener.requests:' || NEW.user_id::text, 0));
    END IF;
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
    IF app_user THEN
        PERFORM listener.check_request_limits(NEW.id, NEW.user_id);
    END IF;
    PERFORM pg_notify('listener_jobs', NEW.id::text);
    RETURN NULL;
END
$$;

-- Deleting a row tells the replicas only when it ends a job that waits or runs. The job
-- goes with its row (ON DELETE CASCADE), before any AFTER trigger could look at it, so
-- this looks just before the row goes.
CREATE OR REPLACE FUNCTION listener.cancel_deleted_model() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM listener.jobs j WHERE j.model_id = OLD.id AND j.finished_at IS NULL) THEN
        PERFORM pg_notify('listener_cancels', OLD.id::text);
    END IF;
    RETURN OLD;
END
$$;

DROP TRIGGER IF EXISTS listener_cancel_delete ON public.ai_generated_models;
CREATE TRIGGER listener_cancel_delete
    BEFORE DELETE ON public.ai_generated_models
    FOR EACH ROW WHEN (OLD.status IN ('pending', 'processing'))
    EXECUTE FUNCTION listener.cancel_deleted_model();

DROP FUNCTION IF EXISTS listener.check_request(public.ai_generated_models);

REVOKE ALL ON FUNCTION listener.check_request_texts(public.ai_generated_models) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.check_request_limits(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION listener.cancel_deleted_model() FROM PUBLIC;
