"""Adapters: one folder or module per outside system, the only code that imports its SDK.

postgres/ (the pool and the job store, LISTEN, the push statements, migrations, the named
queries), ai_server/ (the client and its reachability watch), storage/ (S3 and its bucket
watch), fcm.py (push messages), downloads.py and source_images.py (HTTP files). Each
translates its SDK's errors into listener.errors at the edge.
"""
