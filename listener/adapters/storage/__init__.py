"""Supabase Storage through its S3 endpoint: uploads and downloads, and the bucket's watch."""
