"""Database: tables, engine and migrations (SQLite by default, PostgreSQL at scale)."""

from idlegrid.server.db.engine import make_engine, migrate, session_factory

__all__ = ["make_engine", "migrate", "session_factory"]
