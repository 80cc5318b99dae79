"""The core: a row's life from claim to completion, and nothing of the outside world.

Plain data (data.py), the Protocols through which the core sees Postgres, the AI server,
Storage and the owner's notifications (ports.py), the request's checks (validation.py),
one row's steps (generation.py), its result files (results.py, glb.py, images.py), the
spool's room (spool.py), progress that only rises (progress.py), what is usable right now
(availability.py, storage_state.py), and the supervisor of claims, leases and coroutines
(supervisor.py). No module here imports an SDK or an adapter; tests/unit/test_layout.py
holds that rule, and tests/unit/fakes.py implements the ports in memory.
"""
