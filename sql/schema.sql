-- What a fresh database holds after every migration of this folder: the listener's
-- schema, and the app's tables it changes. Generated, never edited: after adding a
-- migration, `python -m tests.support.schema` writes it again, and
-- tests/integration/test_schema.py fails until it does.
--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: listener; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA listener;


--
-- Name: acting_as_app_user(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.acting_as_app_user() RETURNS boolean
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


--
-- Name: cancel_deleted_model(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.cancel_deleted_model() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM listener.jobs j WHERE j.model_id = OLD.id AND j.finished_at IS NULL) THEN
        PERFORM pg_notify('listener_cancels', OLD.id::text);
    END IF;
    RETURN OLD;
END
$$;


--
-- Name: cancel_model(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.cancel_model() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
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


--
-- Name: check_request_limits(uuid, uuid); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.check_request_limits(model_id uuid, user_id uuid) RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
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


--
-- Name: check_request_texts(public.ai_generated_models); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.check_request_texts(m public.ai_generated_models) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path TO ''
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


--
-- Name: claim_jobs(text, integer, integer, double precision, integer); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.claim_jobs(owner text, slots integer, per_user_limit integer, lease_s double precision, max_claims integer DEFAULT 8) RETURNS TABLE(model_id uuid, ai_task_id text, attempts integer, poll_failures integer, submitted_age_s double precision, queued_s double precision, user_id uuid, generation_type text, prompt text, source_image_url text, art_style text, symmetry_mode text, target_polycount numeric, model_name text, progress integer)
    LANGUAGE plpgsql
    SET search_path TO ''
    SET plan_cache_mode TO 'force_generic_plan'
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


--
-- Name: clear_results(public.ai_generated_models); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.clear_results(m public.ai_generated_models) RETURNS public.ai_generated_models
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


--
-- Name: end_job(uuid, text, text); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.end_job(target uuid, holder text, ending text) RETURNS TABLE(model_id uuid, attempts integer)
    LANGUAGE sql ROWS 1
    SET search_path TO ''
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


--
-- Name: enqueue_model(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.enqueue_model() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
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


--
-- Name: guard_model_write(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.guard_model_write() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
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


--
-- Name: job_priority(uuid); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.job_priority(user_id uuid) RETURNS integer
    LANGUAGE sql STABLE
    AS $$ SELECT 0 $$;


--
-- Name: max_owner_retries(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.max_owner_retries() RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT 3 $$;


--
-- Name: max_requests_per_day(uuid); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.max_requests_per_day(user_id uuid) RETURNS integer
    LANGUAGE sql STABLE
    AS $$ SELECT NULL::integer $$;


--
-- Name: max_unfinished_per_user(uuid); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.max_unfinished_per_user(user_id uuid) RETURNS integer
    LANGUAGE sql STABLE
    AS $$ SELECT 10 $$;


--
-- Name: refresh_grown_statistics(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.refresh_grown_statistics() RETURNS void
    LANGUAGE plpgsql
    SET search_path TO ''
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


--
-- Name: reset_push(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.reset_push() RETURNS trigger
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


--
-- Name: touch_updated_at(); Type: FUNCTION; Schema: listener; Owner: -
--

CREATE FUNCTION listener.touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: audit; Type: TABLE; Schema: listener; Owner: -
--

CREATE TABLE listener.audit (
    id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    actor text NOT NULL,
    action text NOT NULL,
    detail jsonb DEFAULT '{}'::jsonb NOT NULL,
    rows integer DEFAULT 0 NOT NULL
);


--
-- Name: audit_id_seq; Type: SEQUENCE; Schema: listener; Owner: -
--

CREATE SEQUENCE listener.audit_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: audit_id_seq; Type: SEQUENCE OWNED BY; Schema: listener; Owner: -
--

ALTER SEQUENCE listener.audit_id_seq OWNED BY listener.audit.id;


--
-- Name: claims_pause; Type: TABLE; Schema: listener; Owner: -
--

CREATE TABLE listener.claims_pause (
    only_row boolean DEFAULT true NOT NULL,
    paused_by text NOT NULL,
    reason text,
    paused_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT claims_pause_only_row_check CHECK (only_row)
);


--
-- Name: jobs; Type: TABLE; Schema: listener; Owner: -
--

CREATE TABLE listener.jobs (
    model_id uuid NOT NULL,
    user_id uuid NOT NULL,
    priority integer DEFAULT 0 NOT NULL,
    ai_task_id text,
    submitted_at timestamp with time zone,
    attempts integer DEFAULT 0 NOT NULL,
    poll_failures integer DEFAULT 0 NOT NULL,
    owner_retries integer DEFAULT 0 NOT NULL,
    lease_owner text,
    lease_expires_at timestamp with time zone,
    cancel_requested boolean DEFAULT false NOT NULL,
    enqueued_at timestamp with time zone DEFAULT now() NOT NULL,
    claimed_at timestamp with time zone,
    finished_at timestamp with time zone,
    outcome text,
    notification_written_at timestamp with time zone,
    push_sent_at timestamp with time zone,
    push_owner text,
    push_lease_expires_at timestamp with time zone,
    push_attempts integer DEFAULT 0 NOT NULL,
    push_result text,
    files_to_remove boolean DEFAULT false NOT NULL,
    CONSTRAINT jobs_check CHECK (((lease_owner IS NULL) = (lease_expires_at IS NULL))),
    CONSTRAINT jobs_outcome_check CHECK ((outcome = ANY (ARRAY['completed'::text, 'failed'::text, 'cancelled'::text]))),
    CONSTRAINT jobs_push_lease_check CHECK (((push_owner IS NULL) = (push_lease_expires_at IS NULL)))
);


--
-- Name: requests; Type: TABLE; Schema: listener; Owner: -
--

CREATE TABLE listener.requests (
    model_id uuid NOT NULL,
    user_id uuid NOT NULL,
    requested_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: schema_migrations; Type: TABLE; Schema: listener; Owner: -
--

CREATE TABLE listener.schema_migrations (
    version text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: audit id; Type: DEFAULT; Schema: listener; Owner: -
--

ALTER TABLE ONLY listener.audit ALTER COLUMN id SET DEFAULT nextval('listener.audit_id_seq'::regclass);


--
-- Name: audit audit_pkey; Type: CONSTRAINT; Schema: listener; Owner: -
--

ALTER TABLE ONLY listener.audit
    ADD CONSTRAINT audit_pkey PRIMARY KEY (id);


--
-- Name: claims_pause claims_pause_pkey; Type: CONSTRAINT; Schema: listener; Owner: -
--

ALTER TABLE ONLY listener.claims_pause
    ADD CONSTRAINT claims_pause_pkey PRIMARY KEY (only_row);


--
-- Name: jobs jobs_pkey; Type: CONSTRAINT; Schema: listener; Owner: -
--

ALTER TABLE ONLY listener.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (model_id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: listener; Owner: -
--

ALTER TABLE ONLY listener.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: audit_at_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX audit_at_idx ON listener.audit USING btree (at DESC);


--
-- Name: jobs_files_to_remove_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX jobs_files_to_remove_idx ON listener.jobs USING btree (model_id) WHERE files_to_remove;


--
-- Name: jobs_finished_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX jobs_finished_idx ON listener.jobs USING btree (finished_at) WHERE (finished_at IS NOT NULL);


--
-- Name: jobs_leased_by_user_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX jobs_leased_by_user_idx ON listener.jobs USING btree (user_id) WHERE ((finished_at IS NULL) AND (lease_owner IS NOT NULL));


--
-- Name: jobs_requested_by_user_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX jobs_requested_by_user_idx ON listener.jobs USING btree (user_id, enqueued_at, model_id);


--
-- Name: jobs_requested_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX jobs_requested_idx ON listener.jobs USING btree (enqueued_at, model_id);


--
-- Name: jobs_unfinished_by_user_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX jobs_unfinished_by_user_idx ON listener.jobs USING btree (user_id, priority DESC, enqueued_at) WHERE (finished_at IS NULL);


--
-- Name: jobs_unnotified_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX jobs_unnotified_idx ON listener.jobs USING btree (finished_at) WHERE ((outcome = ANY (ARRAY['completed'::text, 'failed'::text])) AND (push_sent_at IS NULL));


--
-- Name: jobs_waiting_by_user_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX jobs_waiting_by_user_idx ON listener.jobs USING btree (user_id, priority DESC, enqueued_at) WHERE ((finished_at IS NULL) AND (lease_owner IS NULL));


--
-- Name: requests_by_model_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX requests_by_model_idx ON listener.requests USING btree (model_id);


--
-- Name: requests_by_time_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX requests_by_time_idx ON listener.requests USING btree (requested_at);


--
-- Name: requests_by_user_idx; Type: INDEX; Schema: listener; Owner: -
--

CREATE INDEX requests_by_user_idx ON listener.requests USING btree (user_id, requested_at);


--
-- Name: jobs listener_reset_push; Type: TRIGGER; Schema: listener; Owner: -
--

CREATE TRIGGER listener_reset_push BEFORE UPDATE ON listener.jobs FOR EACH ROW WHEN (((old.finished_at IS NOT NULL) AND (new.finished_at IS NULL))) EXECUTE FUNCTION listener.reset_push();


--
-- Name: jobs jobs_model_id_fkey; Type: FK CONSTRAINT; Schema: listener; Owner: -
--

ALTER TABLE ONLY listener.jobs
    ADD CONSTRAINT jobs_model_id_fkey FOREIGN KEY (model_id) REFERENCES public.ai_generated_models(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--



--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET transaction_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: ai_generated_models; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.ai_generated_models (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    generation_type character varying(50) NOT NULL,
    prompt text,
    source_image_url text,
    art_style character varying(50),
    target_polycount numeric,
    symmetry_mode character varying(20),
    model_name character varying(255) NOT NULL,
    short_name character varying(50),
    file_format character varying(20) DEFAULT 'glb'::character varying NOT NULL,
    storage_path text NOT NULL,
    download_url text,
    stl_storage_path text,
    stl_download_url text,
    thumbnail_url text,
    gcode_url text,
    file_size bigint,
    model_dimensions jsonb,
    generation_metadata jsonb,
    status character varying(50) DEFAULT 'completed'::character varying,
    tags text[],
    is_favorite boolean DEFAULT false,
    is_public boolean DEFAULT false,
    printed_count integer DEFAULT 0,
    last_printed_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now(),
    updated_at timestamp with time zone DEFAULT now(),
    progress integer DEFAULT 0 NOT NULL,
    error_message text,
    completed_at timestamp with time zone,
    request_key text,
    CONSTRAINT ai_generated_models_generation_type_check CHECK (((generation_type)::text = ANY ((ARRAY['text_to_3d'::character varying, 'image_to_3d'::character varying, 'text_to_image'::character varying])::text[]))),
    CONSTRAINT ai_generated_models_progress_range CHECK (((progress >= 0) AND (progress <= 100))),
    CONSTRAINT ai_generated_models_status_check CHECK (((status)::text = ANY ((ARRAY['pending'::character varying, 'processing'::character varying, 'completed'::character varying, 'failed'::character varying, 'archived'::character varying, 'cancelled'::character varying])::text[]))),
    CONSTRAINT ai_generated_models_symmetry_mode_check CHECK (((symmetry_mode)::text = ANY ((ARRAY['off'::character varying, 'auto'::character varying, 'on'::character varying])::text[])))
);


--
-- Name: live_activity_tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.live_activity_tokens (
    model_id uuid NOT NULL,
    user_id uuid DEFAULT auth.uid() NOT NULL,
    activity_token text NOT NULL,
    device_token text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT live_activity_tokens_activity_token_check CHECK (((length(activity_token) >= 1) AND (length(activity_token) <= 512))),
    CONSTRAINT live_activity_tokens_device_token_check CHECK (((length(device_token) >= 1) AND (length(device_token) <= 4096)))
);


--
-- Name: notifications; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notifications (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    title text NOT NULL,
    message text NOT NULL,
    message_en text,
    type text NOT NULL,
    read boolean DEFAULT false NOT NULL,
    related_id text,
    related_type text,
    metadata jsonb,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    read_at timestamp with time zone
);


--
-- Name: user_notification_settings; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.user_notification_settings (
    user_id uuid NOT NULL,
    push_notifications boolean DEFAULT true NOT NULL,
    ai_complete_enabled boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    ai_progress_enabled boolean DEFAULT false NOT NULL
);


--
-- Name: ai_generated_models ai_generated_models_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ai_generated_models
    ADD CONSTRAINT ai_generated_models_pkey PRIMARY KEY (id);


--
-- Name: ai_generated_models ai_generated_models_request_key_length; Type: CHECK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE public.ai_generated_models
    ADD CONSTRAINT ai_generated_models_request_key_length CHECK (((length(request_key) >= 1) AND (length(request_key) <= 100))) NOT VALID;


--
-- Name: ai_generated_models ai_generated_models_request_key_unique; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.ai_generated_models
    ADD CONSTRAINT ai_generated_models_request_key_unique UNIQUE (user_id, request_key);


--
-- Name: live_activity_tokens live_activity_tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.live_activity_tokens
    ADD CONSTRAINT live_activity_tokens_pkey PRIMARY KEY (model_id);


--
-- Name: notifications notifications_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notifications
    ADD CONSTRAINT notifications_pkey PRIMARY KEY (id);


--
-- Name: user_notification_settings user_notification_settings_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.user_notification_settings
    ADD CONSTRAINT user_notification_settings_pkey PRIMARY KEY (user_id);


--
-- Name: ai_generated_models_user_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ai_generated_models_user_id_idx ON public.ai_generated_models USING btree (user_id);


--
-- Name: live_activity_tokens_user_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX live_activity_tokens_user_id_idx ON public.live_activity_tokens USING btree (user_id);


--
-- Name: notifications_user_id_idx; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notifications_user_id_idx ON public.notifications USING btree (user_id, created_at DESC);


--
-- Name: ai_generated_models listener_cancel_delete; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER listener_cancel_delete BEFORE DELETE ON public.ai_generated_models FOR EACH ROW WHEN (((old.status)::text = ANY ((ARRAY['pending'::character varying, 'processing'::character varying])::text[]))) EXECUTE FUNCTION listener.cancel_deleted_model();


--
-- Name: ai_generated_models listener_cancel_update; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER listener_cancel_update AFTER UPDATE OF status ON public.ai_generated_models FOR EACH ROW WHEN ((((new.status)::text = 'cancelled'::text) AND ((old.status)::text IS DISTINCT FROM 'cancelled'::text))) EXECUTE FUNCTION listener.cancel_model();


--
-- Name: ai_generated_models listener_enqueue_insert; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER listener_enqueue_insert AFTER INSERT ON public.ai_generated_models FOR EACH ROW WHEN (((new.status)::text = 'pending'::text)) EXECUTE FUNCTION listener.enqueue_model();


--
-- Name: ai_generated_models listener_enqueue_retry; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER listener_enqueue_retry AFTER UPDATE OF status ON public.ai_generated_models FOR EACH ROW WHEN ((((new.status)::text = 'pending'::text) AND ((old.status)::text IS DISTINCT FROM 'pending'::text))) EXECUTE FUNCTION listener.enqueue_model();


--
-- Name: ai_generated_models listener_guard; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER listener_guard BEFORE INSERT OR UPDATE ON public.ai_generated_models FOR EACH ROW EXECUTE FUNCTION listener.guard_model_write();


--
-- Name: live_activity_tokens live_activity_tokens_updated_at; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER live_activity_tokens_updated_at BEFORE UPDATE ON public.live_activity_tokens FOR EACH ROW EXECUTE FUNCTION listener.touch_updated_at();


--
-- Name: ai_generated_models update_ai_generated_models_updated_at; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER update_ai_generated_models_updated_at BEFORE UPDATE ON public.ai_generated_models FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();


--
-- Name: live_activity_tokens live_activity_tokens_model_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.live_activity_tokens
    ADD CONSTRAINT live_activity_tokens_model_id_fkey FOREIGN KEY (model_id) REFERENCES public.ai_generated_models(id) ON DELETE CASCADE;


--
-- Name: ai_generated_models; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.ai_generated_models ENABLE ROW LEVEL SECURITY;

--
-- Name: live_activity_tokens; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.live_activity_tokens ENABLE ROW LEVEL SECURITY;

--
-- Name: notifications; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.notifications ENABLE ROW LEVEL SECURITY;

--
-- Name: ai_generated_models owner_delete; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_delete ON public.ai_generated_models FOR DELETE USING ((auth.uid() = user_id));


--
-- Name: live_activity_tokens owner_delete; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_delete ON public.live_activity_tokens FOR DELETE TO authenticated USING ((user_id = auth.uid()));


--
-- Name: notifications owner_delete; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_delete ON public.notifications FOR DELETE USING ((auth.uid() = user_id));


--
-- Name: user_notification_settings owner_delete; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_delete ON public.user_notification_settings FOR DELETE USING ((auth.uid() = user_id));


--
-- Name: ai_generated_models owner_insert; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_insert ON public.ai_generated_models FOR INSERT WITH CHECK ((auth.uid() = user_id));


--
-- Name: live_activity_tokens owner_insert; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_insert ON public.live_activity_tokens FOR INSERT TO authenticated WITH CHECK (((user_id = auth.uid()) AND (EXISTS ( SELECT 1
   FROM public.ai_generated_models m
  WHERE ((m.id = live_activity_tokens.model_id) AND (m.user_id = auth.uid()))))));


--
-- Name: notifications owner_insert; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_insert ON public.notifications FOR INSERT WITH CHECK ((auth.uid() = user_id));


--
-- Name: user_notification_settings owner_insert; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_insert ON public.user_notification_settings FOR INSERT WITH CHECK ((auth.uid() = user_id));


--
-- Name: ai_generated_models owner_select; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_select ON public.ai_generated_models FOR SELECT USING ((auth.uid() = user_id));


--
-- Name: live_activity_tokens owner_select; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_select ON public.live_activity_tokens FOR SELECT TO authenticated USING ((user_id = auth.uid()));


--
-- Name: notifications owner_select; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_select ON public.notifications FOR SELECT USING ((auth.uid() = user_id));


--
-- Name: user_notification_settings owner_select; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_select ON public.user_notification_settings FOR SELECT USING ((auth.uid() = user_id));


--
-- Name: ai_generated_models owner_update; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_update ON public.ai_generated_models FOR UPDATE USING ((auth.uid() = user_id)) WITH CHECK ((auth.uid() = user_id));


--
-- Name: live_activity_tokens owner_update; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_update ON public.live_activity_tokens FOR UPDATE TO authenticated USING ((user_id = auth.uid())) WITH CHECK (((user_id = auth.uid()) AND (EXISTS ( SELECT 1
   FROM public.ai_generated_models m
  WHERE ((m.id = live_activity_tokens.model_id) AND (m.user_id = auth.uid()))))));


--
-- Name: notifications owner_update; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_update ON public.notifications FOR UPDATE USING ((auth.uid() = user_id)) WITH CHECK ((auth.uid() = user_id));


--
-- Name: user_notification_settings owner_update; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY owner_update ON public.user_notification_settings FOR UPDATE USING ((auth.uid() = user_id)) WITH CHECK ((auth.uid() = user_id));


--
-- Name: ai_generated_models public_select; Type: POLICY; Schema: public; Owner: -
--

CREATE POLICY public_select ON public.ai_generated_models FOR SELECT USING (is_public);


--
-- Name: user_notification_settings; Type: ROW SECURITY; Schema: public; Owner: -
--

ALTER TABLE public.user_notification_settings ENABLE ROW LEVEL SECURITY;

--
-- PostgreSQL database dump complete
--
