-- What happens when rows of public.ai_generated_models are written:
--   * an insert as `pending` creates the row's job and notifies `listener_jobs` with its id;
--   * the owner's cancel ends the job and notifies `listener_cancels`;
--   * the owner's retry of a failed row queues its job again and notifies `listener_jobs`;
--   * a guard keeps app users (anon, authenticated) away from what the listener writes.
-- Only ids travel in notifications; the row is the truth.

-- The columns the listener writes; on rows it owns, app users may change none of them.
CREATE OR REPLACE FUNCTION listener.clear_results(m public.ai_generated_models)
RETURNS public.ai_generated_models
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    m.progress := 0;
    m.error_message := NULL;
    m.completed_at := NULL;
    m.storage_path := '';
    m.download_url := NULL;
    m.stl_storage_path := NULL;
    m.stl_download_url := NULL;
    m.thumbnail_url := NULL;
    m.file_size := NULL;
    m.model_dimensions := NULL;
    m.generation_metadata := NULL;
    RETURN m;
END
$$;

CREATE OR REPLACE FUNCTION listener.guard_model_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    job listener.jobs;
BEGIN
    IF NOT listener.acting_as_app_user() THEN
        RETURN NEW;
    END IF;

    IF TG_OP = 'INSERT' THEN
        IF NEW.status = 'pending' THEN
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

    SELECT * INTO job FROM listener.jobs j WHERE j.model_id = OLD.id AND j.finished_at IS NULL;
    IF FOUND THEN
        IF NEW.status = 'cancelled'
           AND to_jsonb(NEW) - 'status' - 'updated_at' = to_jsonb(OLD) - 'status' - 'updated_at' THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'model % is being generated; the only change allowed now is cancelling it (status = cancelled)', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    IF NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending' THEN
        IF OLD.status IS DISTINCT FROM 'failed' THEN
            RAISE EXCEPTION 'only a failed model can be set back to pending'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        SELECT * INTO job FROM listener.jobs j WHERE j.model_id = OLD.id;
        IF FOUND AND job.owner_retries >= listener.max_owner_retries() THEN
            RAISE EXCEPTION 'model % was already retried % times, the most allowed', OLD.id, job.owner_retries
                USING ERRCODE = 'check_violation';
        END IF;
        RETURN listener.clear_results(NEW);
    END IF;

    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION listener.enqueue_model() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
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
        lease_expires_at = NULL
    WHERE model_id = target AND finished_at IS NULL;
    IF FOUND OR TG_OP = 'DELETE' THEN
        PERFORM pg_notify('listener_cancels', target::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER listener_guard
    BEFORE INSERT OR UPDATE ON public.ai_generated_models
    FOR EACH ROW EXECUTE FUNCTION listener.guard_model_write();

CREATE TRIGGER listener_enqueue_insert
    AFTER INSERT ON public.ai_generated_models
    FOR EACH ROW WHEN (NEW.status = 'pending')
    EXECUTE FUNCTION listener.enqueue_model();

CREATE TRIGGER listener_enqueue_retry
    AFTER UPDATE OF status ON public.ai_generated_models
    FOR EACH ROW WHEN (NEW.status = 'pending' AND OLD.status IS DISTINCT FROM 'pending')
    EXECUTE FUNCTION listener.enqueue_model();

CREATE TRIGGER listener_cancel_update
    AFTER UPDATE OF status ON public.ai_generated_models
    FOR EACH ROW WHEN (NEW.status = 'cancelled' AND OLD.status IS DISTINCT FROM 'cancelled')
    EXECUTE FUNCTION listener.cancel_model();

CREATE TRIGGER listener_cancel_delete
    AFTER DELETE ON public.ai_generated_models
    FOR EACH ROW WHEN (OLD.status IN ('pending', 'processing'))
    EXECUTE FUNCTION listener.cancel_model();

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA listener FROM PUBLIC;
