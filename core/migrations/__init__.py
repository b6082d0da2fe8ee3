"""Alembic migrations of jobbot's schema, applied automatically on start."""
