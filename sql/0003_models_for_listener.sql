-- Make public.ai_generated_models ready for the listener, in place: new columns, the
-- statuses `pending` and `cancelled`, and Realtime. Existing rows, their values and the
-- foreign keys other tables hold to this table are untouched.
--
-- The table is live: its CHECK constraints are added NOT VALID (no scan of the rows under
-- the ACCESS EXCLUSIVE lock the ALTER takes, so the app waits for an instant only) and
-- validated by 0012_validate_checks.sql, under a lock that lets reads and writes go on.
-- An earlier text of this file added them valid at once; databases that applied it
-- recorded this checksum, and have nothing to redo:
-- previously: f0ebb8c94c2c3a4d80e70ac29ec832f6bbe01afb7719f8ea34efff4541f6fb34

ALTER TABLE public.ai_generated_models
    ADD COLUMN IF NOT EXISTS progress integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS error_message text,
    ADD COLUMN IF NOT EXISTS completed_at timestamptz;

DO $$
DECLARE
    status_attnum smallint;
    old_check record;
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'public.ai_generated_models'::regclass
          AND conname = 'ai_generated_models_progress_range'
    ) THEN
        ALTER TABLE public.ai_generated_models
            ADD CONSTRAINT ai_generated_models_progress_range CHECK (progress BETWEEN 0 AND 100) NOT VALID;
    END IF;

    -- Replace whatever CHECK constrains `status` alone with one that knows every status.
    SELECT attnum INTO status_attnum FROM pg_attribute
    WHERE attrelid = 'public.ai_generated_models'::regclass AND attname = 'status';

    FOR old_check IN
        SELECT conname FROM pg_constraint
        WHERE conrelid = 'public.ai_generated_models'::regclass
          AND contype = 'c'
          AND conkey = ARRAY[status_attnum]
          AND conname <> 'ai_generated_models_status_check'
    LOOP
        EXECUTE format('ALTER TABLE public.ai_generated_models DROP CONSTRAINT %I', old_check.conname);
    END LOOP;

    ALTER TABLE public.ai_generated_models DROP CONSTRAINT IF EXISTS ai_generated_models_status_check;
    ALTER TABLE public.ai_generated_models ADD CONSTRAINT ai_generated_models_status_check
        CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'archived', 'cancelled')) NOT VALID;

    -- Supabase Realtime streams the changes of the tables in this publication.
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime' AND NOT puballtables)
       AND NOT EXISTS (
           SELECT 1 FROM pg_publication_tables
           WHERE pubname = 'supabase_realtime' AND schemaname = 'public' AND tablename = 'ai_generated_models'
       )
    THEN
        ALTER PUBLICATION supabase_realtime ADD TABLE public.ai_generated_models;
    END IF;
END
$$;
