-- An optional key per request, chosen by the app for one tap of its button: a double tap,
-- or a retry of an insert whose answer was lost, sends the same key, and the database makes
-- no second row (and so no second paid generation, and no second request counted against
-- the user's limits). The key is the user's own: two users may use the same one. Rows
-- without a key are not affected (NULLs never collide).
--
-- A plain unique constraint rather than a partial index, so that PostgREST's upsert can
-- name it (`on_conflict=user_id,request_key`). Building it reads the table once under a
-- lock that holds writes back for that long; the column is new, so the index is small.
ALTER TABLE public.ai_generated_models ADD COLUMN IF NOT EXISTS request_key text;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'ai_generated_models_request_key_unique'
    ) THEN
        ALTER TABLE public.ai_generated_models
            ADD CONSTRAINT ai_generated_models_request_key_unique UNIQUE (user_id, request_key);
    END IF;
    -- A key is a short token, not a place to store text: checked on every write from now
    -- on (NOT VALID: the rows already there have no key).
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint WHERE conname = 'ai_generated_models_request_key_length'
    ) THEN
        ALTER TABLE public.ai_generated_models
            ADD CONSTRAINT ai_generated_models_request_key_length
            CHECK (length(request_key) BETWEEN 1 AND 100) NOT VALID;
    END IF;
END
$$;
