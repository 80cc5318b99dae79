-- The app's tables, created only where they are missing (a fresh database). On the
-- app's Supabase database they exist already, with their rows and foreign keys, and
-- nothing here touches them.

CREATE OR REPLACE FUNCTION pg_temp.owner_policies(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('CREATE POLICY owner_select ON %s FOR SELECT USING (auth.uid() = user_id)', tbl);
    EXECUTE format('CREATE POLICY owner_insert ON %s FOR INSERT WITH CHECK (auth.uid() = user_id)', tbl);
    EXECUTE format(
        'CREATE POLICY owner_update ON %s FOR UPDATE USING (auth.uid() = user_id) WITH CHECK (auth.uid() = user_id)',
        tbl
    );
    EXECUTE format('CREATE POLICY owner_delete ON %s FOR DELETE USING (auth.uid() = user_id)', tbl);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO authenticated, service_role', tbl);
END
$$;

DO $$
BEGIN
    IF to_regclass('public.ai_generated_models') IS NULL THEN
        CREATE TABLE public.ai_generated_models (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL,
            generation_type varchar(50) NOT NULL
                CHECK (generation_type IN ('text_to_3d', 'image_to_3d', 'text_to_image')),
            prompt text,
            source_image_url text,
            art_style varchar(50),
            target_polycount numeric,
            symmetry_mode varchar(20) CHECK (symmetry_mode IN ('off', 'auto', 'on')),
            model_name varchar(255) NOT NULL,
            short_name varchar(50),
            file_format varchar(20) NOT NULL DEFAULT 'glb',
            storage_path text NOT NULL,
            download_url text,
            stl_storage_path text,
            stl_download_url text,
            thumbnail_url text,
            gcode_url text,
            file_size bigint,
            model_dimensions jsonb,
            generation_metadata jsonb,
            status varchar(50) DEFAULT 'completed'
                CHECK (status IN ('processing', 'completed', 'failed', 'archived')),
            tags text[],
            is_favorite boolean DEFAULT false,
            is_public boolean DEFAULT false,
            printed_count integer DEFAULT 0,
            last_printed_at timestamptz,
            created_at timestamptz DEFAULT now(),
            updated_at timestamptz DEFAULT now()
        );
        CREATE INDEX ai_generated_models_user_id_idx ON public.ai_generated_models (user_id);
        PERFORM pg_temp.owner_policies('public.ai_generated_models');
        CREATE POLICY public_select ON public.ai_generated_models FOR SELECT USING (is_public);
        GRANT SELECT ON public.ai_generated_models TO anon;

        CREATE OR REPLACE FUNCTION public.update_updated_at_column() RETURNS trigger
        LANGUAGE plpgsql AS $fn$
        BEGIN
            NEW.updated_at = now();
            RETURN NEW;
        END
        $fn$;
        CREATE TRIGGER update_ai_generated_models_updated_at
            BEFORE UPDATE ON public.ai_generated_models
            FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();
    END IF;

    IF to_regclass('public.user_device_tokens') IS NULL THEN
        CREATE TABLE public.user_device_tokens (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL,
            device_token text NOT NULL,
            platform text NOT NULL CHECK (platform IN ('android', 'ios', 'web')),
            is_active boolean NOT NULL DEFAULT true,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (user_id, device_token)
        );
        PERFORM pg_temp.owner_policies('public.user_device_tokens');
    END IF;

    IF to_regclass('public.notifications') IS NULL THEN
        CREATE TABLE public.notifications (
            id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            user_id uuid NOT NULL,
            title text NOT NULL,
            message text NOT NULL,
            message_en text,
            type text NOT NULL,
            read boolean NOT NULL DEFAULT false,
            related_id text,
            related_type text,
            metadata jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            read_at timestamptz
        );
        CREATE INDEX notifications_user_id_idx ON public.notifications (user_id, created_at DESC);
        PERFORM pg_temp.owner_policies('public.notifications');
    END IF;

    IF to_regclass('public.user_notification_settings') IS NULL THEN
        CREATE TABLE public.user_notification_settings (
            user_id uuid PRIMARY KEY,
            push_notifications boolean NOT NULL DEFAULT true,
            ai_complete_enabled boolean NOT NULL DEFAULT true,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        PERFORM pg_temp.owner_policies('public.user_notification_settings');
    END IF;
END
$$;
