-- The dashboard's reads, one named block each (`-- name: <name>`), loaded by
-- listener/app/dashboard/reads.py. Every one is bounded: by its time window (walked through an
-- index of sql/0011_dashboard.sql), by the rows in flight, or by a LIMIT. Plain reads: they
-- take no lock that a claim or a write of the listener waits for.

-- name: generations
-- $1 window (hours); $2, $3 where the page ends (request time and id of the last row of the
-- page before; 'infinity' and the greatest id for the first page); $4 status or NULL; $5 how many.
-- Newest request first.
SELECT j.model_id, j.user_id, substr(m.model_name::text, 1, 200) AS model_name,
       m.generation_type::text AS kind, m.status::text AS status, m.progress,
       substr(m.error_message, 1, 500) AS reason, j.attempts, j.enqueued_at, j.claimed_at, j.finished_at,
       extract(epoch FROM coalesce(j.claimed_at, j.finished_at, now()) - j.enqueued_at)::float8 AS waiting_s,
       extract(epoch FROM coalesce(j.finished_at, now()) - j.claimed_at)::float8 AS running_s
FROM listener.jobs j
JOIN public.ai_generated_models m ON m.id = j.model_id
WHERE j.enqueued_at >= now() - make_interval(hours => $1::int)
  AND (j.enqueued_at, j.model_id) < ($2::timestamptz, $3::uuid)
  AND ($4::text IS NULL OR m.status::text = $4::text)
ORDER BY j.enqueued_at DESC, j.model_id DESC
LIMIT $5;

-- name: generations_of_user
-- As `generations`, for the users whose id lies between $6 and $7 (the ids that start with
-- the characters asked for).
SELECT j.model_id, j.user_id, substr(m.model_name::text, 1, 200) AS model_name,
       m.generation_type::text AS kind, m.status::text AS status, m.progress,
       substr(m.error_message, 1, 500) AS reason, j.attempts, j.enqueued_at, j.claimed_at, j.finished_at,
       extract(epoch FROM coalesce(j.claimed_at, j.finished_at, now()) - j.enqueued_at)::float8 AS waiting_s,
       extract(epoch FROM coalesce(j.finished_at, now()) - j.claimed_at)::float8 AS running_s
FROM listener.jobs j
JOIN public.ai_generated_models m ON m.id = j.model_id
WHERE j.user_id BETWEEN $6::uuid AND $7::uuid
  AND j.enqueued_at >= now() - make_interval(hours => $1::int)
  AND (j.enqueued_at, j.model_id) < ($2::timestamptz, $3::uuid)
  AND ($4::text IS NULL OR m.status::text = $4::text)
ORDER BY j.enqueued_at DESC, j.model_id DESC
LIMIT $5;

-- name: generation
-- $1 model id. One row and its job, for its details.
SELECT j.model_id, j.user_id, substr(m.model_name::text, 1, 200) AS model_name,
       m.generation_type::text AS kind, m.status::text AS status, m.progress,
       substr(m.error_message, 1, 2000) AS reason, substr(m.prompt, 1, 500) AS prompt,
       substr(m.source_image_url, 1, 500) AS source_image, j.ai_task_id AS task_id, j.attempts,
       j.poll_failures, j.owner_retries, j.lease_owner,
       extract(epoch FROM j.lease_expires_at - now())::float8 AS lease_left_s,
       m.created_at, j.enqueued_at, j.claimed_at, j.submitted_at, j.finished_at, m.completed_at,
       extract(epoch FROM coalesce(j.claimed_at, j.finished_at, now()) - j.enqueued_at)::float8 AS waiting_s,
       extract(epoch FROM coalesce(j.finished_at, now()) - j.claimed_at)::float8 AS running_s,
       m.storage_path, m.download_url, m.stl_storage_path, m.stl_download_url, m.thumbnail_url, m.file_size
FROM listener.jobs j
JOIN public.ai_generated_models m ON m.id = j.model_id
WHERE j.model_id = $1;

-- name: totals
-- $1 window (hours). The window's requests by where they stand, read from the jobs alone.
SELECT CASE
           WHEN j.finished_at IS NOT NULL THEN coalesce(j.outcome, 'ended')
           WHEN j.lease_owner IS NOT NULL THEN 'processing'
           ELSE 'pending'
       END AS status,
       count(*)::int AS n
FROM listener.jobs j
WHERE j.enqueued_at >= now() - make_interval(hours => $1::int)
GROUP BY 1;

-- name: per_hour
-- $1 window (hours). Rows that ended completed or failed, per hour (UTC) of their end.
SELECT date_trunc('hour', j.finished_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
       count(*) FILTER (WHERE j.outcome = 'completed')::int AS completed,
       count(*) FILTER (WHERE j.outcome = 'failed')::int AS failed
FROM listener.jobs j
WHERE j.finished_at >= now() - make_interval(hours => $1::int)
GROUP BY 1
ORDER BY 1;

-- name: durations
-- $1 window (hours), $2 the buckets' upper edges (s, rising). The completed rows of the
-- window: how long each ran (claim to end) as a histogram, with the median and the 95th
-- percentile. One row per bucket that holds any (bucket 0: under the first edge).
WITH ran AS (
    SELECT extract(epoch FROM j.finished_at - j.claimed_at)::float8 AS s
    FROM listener.jobs j
    WHERE j.finished_at >= now() - make_interval(hours => $1::int)
      AND j.outcome = 'completed' AND j.claimed_at IS NOT NULL
)
SELECT b.bucket, b.n, s.total, s.p50, s.p95
FROM (
    SELECT count(*)::int AS total,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ran.s) AS p50,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ran.s) AS p95
    FROM ran
) s
LEFT JOIN LATERAL (
    SELECT width_bucket(ran.s, $2::float8[]) AS bucket, count(*)::int AS n FROM ran GROUP BY 1
) b ON true
ORDER BY b.bucket;

-- name: failure_reasons
-- $1 window (hours), $2 how many. Why the rows that ended in the window failed, most often first.
SELECT coalesce(nullif(btrim(substr(m.error_message, 1, 300)), ''), 'no reason given') AS reason,
       count(*)::int AS n
FROM listener.jobs j
JOIN public.ai_generated_models m ON m.id = j.model_id
WHERE j.finished_at >= now() - make_interval(hours => $1::int) AND j.outcome = 'failed'
GROUP BY 1
ORDER BY n DESC, reason
LIMIT $2;

-- name: queue_depth
-- $1 window (hours), $2 slices. Rows waiting for a claim over the window, cut into $2 equal
-- slices: the most waiting at once in each slice, and how many waited at its last change.
-- Counted: the window's requests, and the older ones that were still waiting in it (the
-- unfinished ones, and those that ended in the window), each found through an index.
WITH bounds AS (
    SELECT now() - make_interval(hours => $1::int) AS since,
           extract(epoch FROM make_interval(hours => $1::int)) / $2::int AS step_s
),
waits AS (
    SELECT j.enqueued_at AS came, coalesce(j.claimed_at, j.finished_at) AS went
    FROM listener.jobs j
    WHERE j.enqueued_at >= now() - make_interval(hours => $1::int)
    UNION ALL
    SELECT now() - make_interval(hours => $1::int), j.claimed_at
    FROM listener.jobs j
    WHERE j.finished_at IS NULL AND j.enqueued_at < now() - make_interval(hours => $1::int)
      AND (j.claimed_at IS NULL OR j.claimed_at > now() - make_interval(hours => $1::int))
    UNION ALL
    SELECT now() - make_interval(hours => $1::int), coalesce(j.claimed_at, j.finished_at)
    FROM listener.jobs j
    WHERE j.finished_at >= now() - make_interval(hours => $1::int)
      AND j.enqueued_at < now() - make_interval(hours => $1::int)
      AND coalesce(j.claimed_at, j.finished_at) > now() - make_interval(hours => $1::int)
),
moves AS (
    SELECT came AS at, 1 AS delta FROM waits
    UNION ALL
    SELECT went, -1 FROM waits WHERE went IS NOT NULL
),
depths AS (
    SELECT at, sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING)::int AS depth FROM moves
)
SELECT least(floor(extract(epoch FROM d.at - b.since) / b.step_s)::int, $2::int - 1) AS slice,
       max(d.depth) AS most,
       (array_agg(d.depth ORDER BY d.at DESC, d.depth))[1] AS last
FROM depths d, bounds b
GROUP BY 1
ORDER BY 1;

-- name: replicas
-- $1 lease seconds. Each replica that holds leases: its rows in flight, how long ago it last
-- renewed (or took) a lease, when its next lease runs out, and how many already ran out.
SELECT j.lease_owner AS owner, count(*)::int AS in_flight,
       count(*) FILTER (WHERE j.lease_expires_at <= now())::int AS expired,
       extract(epoch FROM now() - max(j.lease_expires_at) + make_interval(secs => $1::float8))::float8
           AS renewed_s_ago,
       extract(epoch FROM min(j.lease_expires_at) - now())::float8 AS next_expiry_s
FROM listener.jobs j
WHERE j.finished_at IS NULL AND j.lease_owner IS NOT NULL
GROUP BY j.lease_owner
ORDER BY j.lease_owner
LIMIT 100;

-- name: listening_replicas
-- Replicas connected now: each holds one LISTEN connection to this database.
SELECT count(*)::int AS n
FROM pg_stat_activity
WHERE application_name = 'listener-listen' AND datname = current_database();

-- name: live_in_flight
-- $1 how many. The rows being generated now, with their progress, oldest claim first.
SELECT j.model_id, m.status::text AS status, m.progress,
       extract(epoch FROM now() - j.claimed_at)::float8 AS running_s
FROM listener.jobs j
JOIN public.ai_generated_models m ON m.id = j.model_id
WHERE j.finished_at IS NULL AND j.lease_owner IS NOT NULL
ORDER BY j.claimed_at, j.model_id
LIMIT $1;

-- name: live_markers
-- What moves when a row is requested or ends: the newest request and the newest end.
SELECT now() AS now,
       (SELECT max(enqueued_at) FROM listener.jobs) AS newest_request,
       (SELECT max(finished_at) FROM listener.jobs) AS newest_end;
