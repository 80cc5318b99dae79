-- The claim keeps one plan per connection instead of planning its query at every call.
--
-- A plpgsql function plans each query of its body with the call's values for the first
-- calls, and keeps a generic plan only if that one does not look dearer. The claim's
-- query never passed that test, so every claim was planned anew: about 0.75 ms of a claim
-- that takes 0.1 ms to run when nothing waits. Its plan walks indexes whatever the values
-- (how many slots, the per-user limit), so one generic plan serves every call. A plan
-- made before a burst is made again after the statistics refresh the claim runs itself
-- (sql/0007_claim_function.sql): ANALYZE invalidates the plans that rest on the table.
ALTER FUNCTION listener.claim_jobs(text, integer, integer, double precision, integer)
    SET plan_cache_mode = force_generic_plan;
