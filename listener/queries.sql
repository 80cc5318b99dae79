-- The listener's runtime queries, one named block each (`-- name: <name>`).
-- listener/queries.py loads them; Python code refers to them by name.

-- name: migrations_bootstrap
CREATE SCHEMA IF NOT EXISTS listener;
CREATE TABLE IF NOT EXISTS listener.schema_migrations (
    version text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_lock
SELECT pg_advisory_lock(hashtext('listener.migrate'));

-- name: migrations_unlock
SELECT pg_advisory_unlock(hashtext('listener.migrate'));

-- name: migrations_applied
SELECT version, checksum FROM listener.schema_migrations ORDER BY version;

-- name: migrations_record
INSERT INTO listener.schema_migrations (version, checksum) VALUES ($1, $2);
