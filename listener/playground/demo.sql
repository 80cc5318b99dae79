-- The few statements `listener demo` runs as an app user would (inside a transaction that
-- acts as Supabase's `authenticated`), one named block each, as in listener/adapters/postgres/queries.sql.

-- name: demo_act_as_user
-- $1 the JWT claims: the rest of the transaction runs as this app user (as PostgREST does).
SELECT set_config('request.jwt.claims', $1, true), set_config('role', 'authenticated', true);

-- name: demo_insert_model
-- $1 user id, $2 generation type, $3 prompt, $4 source image path, $5 model name.
INSERT INTO public.ai_generated_models
    (user_id, generation_type, prompt, source_image_url, model_name, storage_path, status)
VALUES ($1, $2, $3, $4, $5, '', 'pending')
RETURNING id;

-- name: demo_cancel_model
-- $1 model id. The owner's cancel, only while the row is still in the listener's hands.
UPDATE public.ai_generated_models SET status = 'cancelled'
WHERE id = $1 AND status IN ('pending', 'processing')
RETURNING id;

-- name: demo_rows
-- $1 model ids. The rows as a Realtime subscriber sees them, and how long each took.
SELECT m.id, m.status, m.progress, m.error_message, m.storage_path, m.file_size,
       extract(epoch FROM coalesce(j.finished_at, m.completed_at, now()) - m.created_at)::float8 AS took_s
FROM public.ai_generated_models m LEFT JOIN listener.jobs j ON j.model_id = m.id
WHERE m.id = ANY($1::uuid[]);

-- name: demo_data_directory
-- Where the demo's throwaway cluster keeps its files (superuser only).
SELECT current_setting('data_directory');
