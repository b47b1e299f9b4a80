"""Votes, stored: the write path from validated records to PostgreSQL.

`records` is what a vote or item looks like on the way in; `ingest` writes batches in one
statement (the SQL function in app/db/sql); `lifecycle` deletes and settles them; `export`
streams the raw votes back out; `project_cache` keeps the per-process view of a project the
write path checks against. Connectors and the API call in here; nothing here computes a soft
label (that is app/labels)."""
