"""Postgres through asyncpg: the pool, the job store, LISTEN, the push statements, migrations."""
