-- Progress on the lock screen while the app is closed. iOS: the app starts a Live Activity
-- for a row it just inserted and registers the activity's push token here, beside the FCM
-- token of the device that holds it (FCM HTTP v1 sends a Live Activity update to both).
-- Android: the user's device tokens, for users who opt in with ai_progress_enabled.

CREATE TABLE IF NOT EXISTS public.live_activity_tokens (
    model_id uuid PRIMARY KEY REFERENCES public.ai_generated_models (id) ON DELETE CASCADE,
    user_id uuid NOT NULL DEFAULT auth.uid(),
    -- The Live Activity's APNs push token (pushTokenUpdates), as hex.
    activity_token text NOT NULL CHECK (length(activity_token) BETWEEN 1 AND 512),
    -- The FCM registration token of the iPhone that shows the activity.
    device_token text NOT NULL CHECK (length(device_token) BETWEEN 1 AND 4096),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS live_activity_tokens_user_id_idx ON public.live_activity_tokens (user_id);

-- The database decides, not the client: an app user reads and writes the token of their own
-- rows only (the model must be theirs too), and anon nothing at all.
ALTER TABLE public.live_activity_tokens ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS owner_select ON public.live_activity_tokens;
CREATE POLICY owner_select ON public.live_activity_tokens FOR SELECT TO authenticated
    USING (user_id = auth.uid());
DROP POLICY IF EXISTS owner_insert ON public.live_activity_tokens;
CREATE POLICY owner_insert ON public.live_activity_tokens FOR INSERT TO authenticated
    WITH CHECK (
        user_id = auth.uid()
        AND EXISTS (SELECT 1 FROM public.ai_generated_models m WHERE m.id = model_id AND m.user_id = auth.uid())
    );
DROP POLICY IF EXISTS owner_update ON public.live_activity_tokens;
CREATE POLICY owner_update ON public.live_activity_tokens FOR UPDATE TO authenticated
    USING (user_id = auth.uid())
    WITH CHECK (
        user_id = auth.uid()
        AND EXISTS (SELECT 1 FROM public.ai_generated_models m WHERE m.id = model_id AND m.user_id = auth.uid())
    );
DROP POLICY IF EXISTS owner_delete ON public.live_activity_tokens;
CREATE POLICY owner_delete ON public.live_activity_tokens FOR DELETE TO authenticated
    USING (user_id = auth.uid());

REVOKE ALL ON public.live_activity_tokens FROM anon, PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.live_activity_tokens TO authenticated, service_role;

-- A token iOS rotates is upserted: updated_at says when it last changed.
CREATE OR REPLACE FUNCTION listener.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION listener.touch_updated_at() FROM PUBLIC;

DROP TRIGGER IF EXISTS live_activity_tokens_updated_at ON public.live_activity_tokens;
CREATE TRIGGER live_activity_tokens_updated_at
    BEFORE UPDATE ON public.live_activity_tokens
    FOR EACH ROW EXECUTE FUNCTION listener.touch_updated_at();

-- Android's progress is opt-in: off until the user turns it on in the app. A constant
-- default adds the column without rewriting the table.
ALTER TABLE public.user_notification_settings
    ADD COLUMN IF NOT EXISTS ai_progress_enabled boolean NOT NULL DEFAULT false;
