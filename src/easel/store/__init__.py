"""Records and the job queue, in one SQL database (SQLite or PostgreSQL)."""
