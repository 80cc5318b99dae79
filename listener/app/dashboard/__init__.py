"""The generation history dashboard: `/dashboard` and its JSON API under `/api/`, behind a token."""
