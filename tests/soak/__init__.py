"""The chaos soak: `python -m tests.soak.soak` (full) or `--quick` (the CI's two minutes)."""
