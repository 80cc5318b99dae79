-- Validates the CHECK constraints 0003_models_for_listener.sql added NOT VALID. VALIDATE
-- reads every row under SHARE UPDATE EXCLUSIVE, which lets the app read and write the
-- table meanwhile. A constraint that is valid already is left as it is.
ALTER TABLE public.ai_generated_models VALIDATE CONSTRAINT ai_generated_models_progress_range;
ALTER TABLE public.ai_generated_models VALIDATE CONSTRAINT ai_generated_models_status_check;
