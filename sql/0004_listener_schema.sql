-- The listener's own state: one job per model it owns. Out of reach of the app's roles.

CREATE SCHEMA IF NOT EXISTS listener;
REVOKE ALL ON SCHEMA listener FROM PUBLIC;
REVOKE ALL ON SCHEMA listener FROM anon, authenticated;

CREATE TABLE listener.jobs (
    model_id uuid PRIMARY KEY REFERENCES public.ai_generated_models (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    priority integer NOT NULL DEFAULT 0,
    -- The AI server's task id, stored before the first poll: a row that has one is resumed, never resubmitted.
    ai_task_id text,
    submitted_at timestamptz,
    -- How many times a replica claimed this job, and how many polls in a row have failed.
    attempts integer NOT NULL DEFAULT 0,
    poll_failures integer NOT NULL DEFAULT 0,
    -- How many times the owner set a failed row back to pending.
    owner_retries integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    claimed_at timestamptz,
    finished_at timestamptz,
    -- The terminal status the user is told about, and when they were told.
    outcome text CHECK (outcome IN ('completed', 'failed', 'cancelled')),
    notification_written_at timestamptz,
    push_sent_at timestamptz,
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL))
);

-- Claim order among unfinished jobs.
CREATE INDEX jobs_claim_order_idx ON listener.jobs (priority DESC, enqueued_at)
    WHERE finished_at IS NULL;
-- In-flight jobs per user, for the per-user limit.
CREATE INDEX jobs_leased_by_user_idx ON listener.jobs (user_id)
    WHERE finished_at IS NULL AND lease_owner IS NOT NULL;
-- Finished jobs whose owner has not been told yet.
CREATE INDEX jobs_unnotified_idx ON listener.jobs (finished_at)
    WHERE outcome IN ('completed', 'failed') AND push_sent_at IS NULL;

-- A deployment replaces this to serve some users first (higher runs earlier).
CREATE OR REPLACE FUNCTION listener.job_priority(user_id uuid) RETURNS integer
LANGUAGE sql STABLE
AS $$ SELECT 0 $$;

-- How many times an owner may set a failed row back to pending.
CREATE OR REPLACE FUNCTION listener.max_owner_retries() RETURNS integer
LANGUAGE sql IMMUTABLE
AS $$ SELECT 3 $$;

-- True when the statement runs for an app user (PostgREST's SET ROLE), also inside
-- SECURITY DEFINER functions, where current_user is the function's owner.
CREATE OR REPLACE FUNCTION listener.acting_as_app_user() RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT current_setting('role', true) IN ('anon', 'authenticated')
        OR session_user::text IN ('anon', 'authenticated')
$$;
